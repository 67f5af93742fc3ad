"""The duplex WebSocket protocol: binary messages, one type byte + payload (little-endian).

Client -> server:

  0x00 HELLO        UTF-8 JSON, optional, before the first unit: {"sample_rate": int (must equal the
                    model's), "seed": int (the conversation's sampling seed, default 0),
                    "video": bool (send the avatar frames, default true)}.
  0x01 AUDIO_PCM16  int16 [samples_per_unit]: 160 ms of mono audio at the model's rate. Closes the unit:
                    the frames and text sent since the previous unit go with it.
  0x02 AUDIO_F32    float32 [samples_per_unit] in [-1, 1]: the same unit as float samples.
  0x03 VIDEO_FRAME  u8 format, then 0 = JPEG bytes, 1 = RAW: u16 height, u16 width, uint8 [h, w, 3].
                    At most 4 per unit (25 fps), resized to the model's size; fewer repeat the last
                    one; none -> the unit has the camera off.
  0x04 TEXT         UTF-8 typed text, one typed turn: its words (bytes + WORD_END) and END_OF_TURN
                    join the session's text queue; each unit takes up to text_slots tokens from it.
  0x05 TEXT_TOKENS  int16 [k] token ids (bytes 0..255 and the specials) appended to the text queue
                    as they are: replays a recording's per-unit text exactly.

Server -> client (per model unit, in this order: INFO first, its first byte ends the round trip):

  0x00 HELLO        UTF-8 JSON: protocol version, session id, slot, sample_rate, samples_per_unit,
                    frames_per_unit, height, width, text_slots, unit_ms, next_tick_ms.
  0x10 INFO         u32 unit, i32 input_seq (the client unit consumed, -1 = silence: it was late),
                    u8 turn_state (0 silent, 1 speaking, 2 yielded), u8 flags (1 = reset),
                    u16 queued_units, f32 step_ms, f32 tick_age_ms (tick -> this send), f32
                    next_tick_ms (until the next deadline), u32 late_units (so far).
  0x11 AUDIO        u32 unit, float32 [samples_per_unit]: the model's voice.
  0x12 VIDEO        u32 unit, u8 frames, u16 height, u16 width, uint8 [frames, h, w, 3]: the avatar.
  0x13 TEXT         u32 unit, int16 [text_slots]: the model's text tokens (bytes, PAD, WORD_END,
                    END_OF_TURN).
  0x7E CLOSING      UTF-8 JSON {"reason": str}: the server is going away (then close code 1001).
  0x7F ERROR        UTF-8 JSON {"code": str, "message": str}: the message was refused; the
                    connection stays up (except code "pool_full", then close code 1013).

Messages larger than `MAX_MESSAGE_BYTES` are cut off by the WebSocket layer (close code 1009);
everything else that is wrong gets an ERROR and is dropped.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from typing import Any

import numpy as np

from wan_streamer_jax.config import TextConfig

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4 << 20  # WebSocket frame cap: anything bigger closes the connection (1009)
MAX_FRAME_BYTES = 2 << 20  # one JPEG or raw frame (1080p raw is 6 MB: resize on the client)
MAX_TEXT_BYTES = 4096  # one typed message
MAX_FRAMES_PER_UNIT = 4

# client -> server
C_HELLO, C_AUDIO_PCM16, C_AUDIO_F32, C_VIDEO_FRAME, C_TEXT, C_TEXT_TOKENS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
FRAME_JPEG, FRAME_RAW = 0, 1
# server -> client
S_HELLO, S_INFO, S_AUDIO, S_VIDEO, S_TEXT, S_CLOSING, S_ERROR = 0x00, 0x10, 0x11, 0x12, 0x13, 0x7E, 0x7F

TURN_STATES = ("silent", "speaking", "yielded")
_INFO = struct.Struct("<IiBBHfffI")
_VIDEO_HEAD = struct.Struct("<IBHH")
_RAW_HEAD = struct.Struct("<HH")


class ProtocolError(ValueError):
  """A refused client message; `code` is machine-readable, the text says expected vs received."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """What a unit looks like on the wire (from the artifact's manifest)."""

  sample_rate: int
  samples_per_unit: int
  frames_per_unit: int
  height: int
  width: int
  text_slots: int
  unit_seconds: float = 0.16

  @classmethod
  def from_manifest(cls, manifest: dict) -> "StreamSpec":
    """Sizes from the manifest's input specs (`audio [S, spu]`, `video [S, F, H, W, 3]`, `text
    [S, slots]`) and its `sample_rate` (top level, or `config.audio.sample_rate`)."""
    inputs = manifest.get("inputs", {})
    missing = [k for k in ("audio", "video", "text", "camera_on") if k not in inputs]
    if missing:
      raise ValueError(f"manifest.inputs: expected {missing} among the step's inputs, received {sorted(inputs)}")
    rate = manifest.get("sample_rate", manifest.get("config", {}).get("audio", {}).get("sample_rate"))
    if not rate:
      raise ValueError("manifest: expected sample_rate (or config.audio.sample_rate), received none")
    spu = int(inputs["audio"]["shape"][1])
    _, frames, height, width, _ = inputs["video"]["shape"]
    return cls(sample_rate=int(rate), samples_per_unit=spu, frames_per_unit=int(frames), height=int(height),
               width=int(width), text_slots=int(inputs["text"]["shape"][1]), unit_seconds=spu / int(rate))


# ---------------------------------------------------------------- encoding (both directions)

def json_message(kind: int, obj: dict) -> bytes:
  return bytes([kind]) + json.dumps(obj, sort_keys=True).encode("utf-8")


def error_message(code: str, message: str) -> bytes:
  return json_message(S_ERROR, {"code": code, "message": message})


def audio_pcm16_message(audio: np.ndarray) -> bytes:
  """float32 `[samples]` in [-1, 1] -> AUDIO_PCM16 (rounded, clipped)."""
  pcm = np.clip(np.rint(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype("<i2")
  return bytes([C_AUDIO_PCM16]) + pcm.tobytes()


def audio_f32_message(audio: np.ndarray) -> bytes:
  return bytes([C_AUDIO_F32]) + np.asarray(audio, "<f4").tobytes()


def raw_frame_message(frame: np.ndarray) -> bytes:
  """uint8 `[h, w, 3]` -> VIDEO_FRAME (raw)."""
  frame = np.ascontiguousarray(frame, np.uint8)
  return bytes([C_VIDEO_FRAME, FRAME_RAW]) + _RAW_HEAD.pack(*frame.shape[:2]) + frame.tobytes()


def jpeg_frame_message(jpeg: bytes) -> bytes:
  return bytes([C_VIDEO_FRAME, FRAME_JPEG]) + jpeg


def text_message(text: str) -> bytes:
  return bytes([C_TEXT]) + text.encode("utf-8")


def text_tokens_message(tokens) -> bytes:
  return bytes([C_TEXT_TOKENS]) + np.asarray(tokens, "<i2").tobytes()


def unit_messages(unit: int, input_seq: int, turn_state: int, reset: bool, queued: int, step_ms: float,
                  tick_age_ms: float, next_tick_ms: float, late_units: int, audio: np.ndarray,
                  video: np.ndarray | None, text: np.ndarray) -> list[bytes]:
  """The server's messages for one model unit: INFO, AUDIO, VIDEO (unless None), TEXT."""
  out = [bytes([S_INFO]) + _INFO.pack(unit, input_seq, turn_state, int(reset), min(queued, 65535), step_ms,
                                      tick_age_ms, next_tick_ms, late_units),
         bytes([S_AUDIO]) + struct.pack("<I", unit) + np.asarray(audio, "<f4").tobytes()]
  if video is not None:
    n, h, w = video.shape[:3]
    out.append(bytes([S_VIDEO]) + _VIDEO_HEAD.pack(unit, n, h, w) + np.ascontiguousarray(video, np.uint8).tobytes())
  out.append(bytes([S_TEXT]) + struct.pack("<I", unit) + np.asarray(text, "<i2").tobytes())
  return out


def parse_server_message(data: bytes) -> tuple[int, Any]:
  """Server message -> (type, payload): dict for JSON types and INFO, (unit, array) for AUDIO/TEXT,
  (unit, uint8 [n, h, w, 3]) for VIDEO."""
  if not data:
    raise ProtocolError("empty", "server message: expected a type byte, received an empty message")
  kind, body = data[0], memoryview(data)[1:]
  if kind in (S_HELLO, S_CLOSING, S_ERROR):
    return kind, json.loads(bytes(body).decode("utf-8"))
  if kind == S_INFO:
    names = ("unit", "input_seq", "turn_state", "flags", "queued_units", "step_ms", "tick_age_ms",
             "next_tick_ms", "late_units")
    return kind, dict(zip(names, _INFO.unpack(body)))
  if kind == S_AUDIO:
    return kind, (struct.unpack_from("<I", body)[0], np.frombuffer(body[4:], "<f4").astype(np.float32))
  if kind == S_VIDEO:
    unit, n, h, w = _VIDEO_HEAD.unpack_from(body)
    return kind, (unit, np.frombuffer(body[_VIDEO_HEAD.size:], np.uint8).reshape(n, h, w, 3))
  if kind == S_TEXT:
    return kind, (struct.unpack_from("<I", body)[0], np.frombuffer(body[4:], "<i2").astype(np.int32))
  raise ProtocolError("unknown_type", f"server message type: expected one of 0x00,0x10-0x13,0x7E,0x7F, "
                                      f"received 0x{kind:02x}")


# ---------------------------------------------------------------- decoding (server side)

def decode_hello(body: bytes, spec: StreamSpec) -> dict:
  """HELLO payload -> {"seed": int, "video": bool}; a wrong sample rate or bad JSON is refused."""
  try:
    obj = json.loads(bytes(body).decode("utf-8")) if body else {}
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ProtocolError("bad_hello", f"hello: expected UTF-8 JSON, received {len(body)} bytes ({e})") from e
  if not isinstance(obj, dict):
    raise ProtocolError("bad_hello", f"hello: expected a JSON object, received {type(obj).__name__}")
  rate = obj.get("sample_rate", spec.sample_rate)
  if rate != spec.sample_rate:
    raise ProtocolError("sample_rate", f"hello.sample_rate: expected {spec.sample_rate} Hz (the model's rate; "
                                       f"resample on the client), received {rate!r}")
  seed = obj.get("seed", 0)
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
    raise ProtocolError("bad_hello", f"hello.seed: expected an int in [0, 2**31), received {seed!r}")
  video = obj.get("video", True)
  if not isinstance(video, bool):
    raise ProtocolError("bad_hello", f"hello.video: expected true/false, received {video!r}")
  return {"seed": seed, "video": video}


def decode_audio(kind: int, body: bytes, spec: StreamSpec) -> np.ndarray:
  """AUDIO_PCM16 / AUDIO_F32 payload -> float32 `[samples_per_unit]` in [-1, 1]."""
  n = spec.samples_per_unit
  width = 2 if kind == C_AUDIO_PCM16 else 4
  name = "audio_pcm16" if kind == C_AUDIO_PCM16 else "audio_f32"
  if len(body) != n * width:
    got = len(body) / width
    hint = (f" (= {got / spec.unit_seconds:.0f} Hz for 160 ms: wrong sample rate?)"
            if len(body) % width == 0 and got else "")
    raise ProtocolError("audio_size", f"{name}: expected {n} samples ({n * width} bytes) = 160 ms at "
                                      f"{spec.sample_rate} Hz, received {len(body)} bytes{hint}")
  if kind == C_AUDIO_PCM16:
    return np.frombuffer(body, "<i2").astype(np.float32) / 32768.0
  x = np.frombuffer(body, "<f4").astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise ProtocolError("audio_not_finite", f"{name}: expected finite samples in [-1, 1], received "
                                            f"{int(np.sum(~np.isfinite(x)))} NaN/inf samples")
  peak = float(np.max(np.abs(x))) if x.size else 0.0
  if peak > 1.0:
    raise ProtocolError("audio_range", f"{name}: expected samples in [-1, 1], received a peak of {peak:.4g}")
  return x


def decode_frame(body: bytes, spec: StreamSpec) -> np.ndarray:
  """VIDEO_FRAME payload -> uint8 `[height, width, 3]` at the model's size."""
  if len(body) < 1:
    raise ProtocolError("frame_truncated", "video_frame: expected a format byte (0 JPEG, 1 raw), received nothing")
  fmt, data = body[0], bytes(body[1:])
  if len(data) > MAX_FRAME_BYTES:
    raise ProtocolError("frame_size", f"video_frame: expected at most {MAX_FRAME_BYTES} bytes, received {len(data)}")
  if fmt == FRAME_RAW:
    if len(data) < _RAW_HEAD.size:
      raise ProtocolError("frame_truncated", f"video_frame raw: expected a 4-byte (height, width) header, "
                                             f"received {len(data)} bytes")
    h, w = _RAW_HEAD.unpack_from(data)
    if len(data) - _RAW_HEAD.size != h * w * 3 or h == 0 or w == 0:
      raise ProtocolError("frame_size", f"video_frame raw: expected {h}x{w}x3 = {h * w * 3} pixel bytes, "
                                        f"received {len(data) - _RAW_HEAD.size}")
    frame = np.frombuffer(data, np.uint8, offset=_RAW_HEAD.size).reshape(h, w, 3)
  elif fmt == FRAME_JPEG:
    from PIL import Image, UnidentifiedImageError
    try:
      with Image.open(io.BytesIO(data)) as im:
        if im.format != "JPEG":
          raise ProtocolError("frame_format", f"video_frame jpeg: expected a JPEG image, received {im.format}")
        frame = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
      raise ProtocolError("frame_format", f"video_frame jpeg: expected a JPEG image, received {len(data)} "
                                          f"undecodable bytes ({e})") from e
  else:
    raise ProtocolError("frame_format", f"video_frame: expected format 0 (JPEG) or 1 (raw), received {fmt}")
  if frame.shape[:2] != (spec.height, spec.width):
    from PIL import Image
    frame = np.asarray(Image.fromarray(frame).resize((spec.width, spec.height), Image.BOX))
  return np.ascontiguousarray(frame)


def decode_text(body: bytes) -> list[int]:
  """TEXT payload -> tokens: each word's UTF-8 bytes + WORD_END, then END_OF_TURN."""
  if len(body) > MAX_TEXT_BYTES:
    raise ProtocolError("text_size", f"text: expected at most {MAX_TEXT_BYTES} bytes, received {len(body)}")
  try:
    words = bytes(body).decode("utf-8").split()
  except UnicodeDecodeError as e:
    raise ProtocolError("text_encoding", f"text: expected UTF-8, received invalid bytes ({e})") from e
  tokens: list[int] = []
  for w in words:
    tokens += list(w.encode("utf-8")) + [TextConfig.WORD_END]
  return tokens + [TextConfig.END_OF_TURN] if words else []


def decode_text_tokens(body: bytes) -> list[int]:
  if len(body) % 2 or len(body) > MAX_TEXT_BYTES:
    raise ProtocolError("text_tokens_size", f"text_tokens: expected an even number of bytes <= {MAX_TEXT_BYTES}"
                                            f" (int16 ids), received {len(body)}")
  toks = np.frombuffer(body, "<i2").astype(np.int32)
  bad = toks[(toks < 0) | (toks >= TextConfig.VOCAB_SIZE)]
  if bad.size:
    raise ProtocolError("text_tokens_range", f"text_tokens: expected ids in [0, {TextConfig.VOCAB_SIZE}), "
                                             f"received {bad[:4].tolist()}")
  return toks.tolist()


def decode_text_tokens_to_str(tokens) -> str:
  """Model text tokens -> display text (WORD_END -> space, END_OF_TURN -> newline, PAD dropped)."""
  out, buf = [], bytearray()
  for t in np.asarray(tokens).reshape(-1).tolist():
    if t < 256:
      buf.append(t)
      continue
    if buf:
      out.append(buf.decode("utf-8", "replace"))
      buf = bytearray()
    if t == TextConfig.WORD_END:
      out.append(" ")
    elif t == TextConfig.END_OF_TURN:
      out.append("\n")
  if buf:
    out.append(buf.decode("utf-8", "replace"))
  return "".join(out)
