"""A Python client: streams a recording through the server and writes what `launch.stream` writes.

    result = asyncio.run(stream_recording("ws://127.0.0.1:8998/ws", recording, seed=0))
    result.outputs            # {"audio" [U, spu], "video" [U, 4, H, W, 3], "text" [U, slots], "turn_state", "unit"}
    result.rtt_ms             # float64 [U]: send of unit k's first message -> its INFO's first byte
    result.write(out_dir)     # NAME_stereo.wav, NAME.mp4, NAME_transcript.json/.txt, NAME_rtt.json

    python -m wan_streamer_jax.serving.client --url=ws://127.0.0.1:8998/ws --split=test --index=3 --out_dir=/tmp/talk

Real time (`realtime=True`): units are sent on the server's clock, each `lead_ms` before the
deadline that will take it (the server's HELLO and every INFO say when the next deadline is), so a
unit waits `lead_ms` for its step, not up to a whole unit. `realtime=False` sends as fast as the
server's flow control lets it (the pool still takes one unit per 160 ms).
`align=False` keeps the client's own 160 ms clock instead (a unit then waits for the next deadline,
on average half a unit).
Outputs are keyed by the client unit they answer (`input_seq`); a unit the server stepped with
silence because ours was late is counted in `late_units` and not part of `outputs`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import types

import aiohttp
import numpy as np

from wan_streamer_jax.config import FRAMES_PER_UNIT, TextConfig
from wan_streamer_jax.serving import protocol as P


@dataclasses.dataclass
class ClientResult:
  recording: object  # streaming.recording.UserRecording
  hello: dict
  outputs: dict
  rtt_ms: np.ndarray
  step_ms: np.ndarray
  late_units: int
  errors: list

  def rtt_summary(self) -> dict:
    r = self.rtt_ms if self.rtt_ms.size else np.zeros(1)
    return {"units": int(self.rtt_ms.size), "late_units": self.late_units,
            **{f"rtt_ms_p{p}": round(float(np.percentile(r, p)), 2) for p in (50, 95, 99)},
            "step_ms_p50": round(float(np.median(self.step_ms)), 2) if self.step_ms.size else None}

  def write(self, out_dir: str, mp4: bool = True) -> dict:
    """The files of `launch.stream` (stereo WAV, side-by-side MP4, transcript) + NAME_rtt.json."""
    from wan_streamer_jax.streaming.outputs import StreamRecorder
    rec = StreamRecorder(self.recording, slot=0)
    for k in range(self.outputs["audio"].shape[0]):
      rec.add(k, {name: v[k:k + 1] for name, v in self.outputs.items()})
    files = rec.write(out_dir, sample_rate=self.hello["sample_rate"], mp4=mp4)
    files["rtt"] = os.path.join(out_dir, f"{self.recording.name}_rtt.json")
    with open(files["rtt"], "w") as f:
      json.dump({**self.rtt_summary(), "rtt_ms": [round(float(x), 3) for x in self.rtt_ms],
                 "step_ms": [round(float(x), 3) for x in self.step_ms], "errors": self.errors}, f, indent=1)
    return files


def sizes_config(hello: dict):
  """The fields of a Config that recordings need, from the server's HELLO (no model config here)."""
  return types.SimpleNamespace(
      name="served",
      audio=types.SimpleNamespace(sample_rate=hello["sample_rate"], samples_per_unit=hello["samples_per_unit"]),
      video=types.SimpleNamespace(height=hello["height"], width=hello["width"]),
      text=types.SimpleNamespace(text_slots=hello["text_slots"]))


def unit_messages(rec, k: int, pcm16: bool = False) -> list[bytes]:
  """Client messages of recording unit `k`: its frames (camera on), its text row, then its audio."""
  spu, F = rec.samples_per_unit, FRAMES_PER_UNIT
  msgs = []
  if rec.camera_on[k]:
    msgs += [P.raw_frame_message(f) for f in rec.video[k * F:(k + 1) * F]]
  row = rec.text[k]
  if np.any(row != TextConfig.PAD):
    msgs.append(P.text_tokens_message(row))
  audio = rec.audio[k * spu:(k + 1) * spu]
  msgs.append(P.audio_pcm16_message(audio) if pcm16 else P.audio_f32_message(audio))
  return msgs


class _Receiver:
  """Collects the server's messages into per-unit outputs (INFO maps a model unit to our unit)."""

  def __init__(self, spec: dict, units: int):
    spu, slots, H, W = spec["samples_per_unit"], spec["text_slots"], spec["height"], spec["width"]
    self.out = {"audio": np.zeros((units, spu), np.float32), "video": np.zeros((units, FRAMES_PER_UNIT, H, W, 3), np.uint8),
                "text": np.full((units, slots), TextConfig.PAD, np.int32), "turn_state": np.zeros(units, np.int32),
                "unit": np.zeros(units, np.int32)}
    self.rtt_ms = np.full(units, np.nan)
    self.step_ms = np.full(units, np.nan)
    self.sent_at = np.full(units, np.nan)
    self.unit_to_seq: dict[int, int] = {}
    self.answered = 0
    self.late_units = 0
    self.errors: list = []
    self.next_tick = None  # monotonic time of the server's next deadline (latest estimate)
    self.period = spec["unit_ms"] / 1e3
    self.closing = None

  def feed(self, data: bytes, now: float) -> None:
    kind, body = P.parse_server_message(data)
    if kind == P.S_INFO:
      seq = body["input_seq"]
      self.next_tick = now + body["next_tick_ms"] / 1e3
      if 0 <= seq < self.rtt_ms.size:
        self.late_units = body["late_units"]  # silence after our last unit is not our lateness
        self.rtt_ms[seq] = (now - self.sent_at[seq]) * 1e3
        self.step_ms[seq] = body["step_ms"]
        self.out["turn_state"][seq], self.out["unit"][seq] = body["turn_state"], body["unit"]
        self.unit_to_seq[body["unit"]] = seq
    elif kind in (P.S_AUDIO, P.S_VIDEO, P.S_TEXT):
      unit, arr = body
      seq = self.unit_to_seq.get(unit)
      if seq is not None:
        self.out[{P.S_AUDIO: "audio", P.S_VIDEO: "video", P.S_TEXT: "text"}[kind]][seq] = arr
        self.answered += kind == P.S_TEXT  # TEXT is the unit's last message
    elif kind == P.S_ERROR:
      self.errors.append(body)
    elif kind == P.S_CLOSING:
      self.closing = body


async def stream_recording(url: str, recording=None, *, make_recording=None, seed: int = 0, realtime: bool = True,
                           lead_ms: float = 30.0, align: bool = True, video: bool = True, pcm16: bool = False,
                           timeout_s: float | None = None) -> ClientResult:
  """Streams `recording` (or `make_recording(hello)`, built from the server's sizes) through `url`."""
  async with aiohttp.ClientSession() as http:
    async with http.ws_connect(url, max_msg_size=P.MAX_MESSAGE_BYTES) as ws:
      first = await ws.receive(timeout=30)
      if first.type != aiohttp.WSMsgType.BINARY:
        raise ConnectionError(f"{url}: expected the server's HELLO, received {first.type.name} {first.data!r}")
      kind, hello = P.parse_server_message(first.data)
      if kind != P.S_HELLO:
        raise ConnectionError(f"{url}: refused: {hello.get('message', hello)}")
      hello_at = time.monotonic()
      rec = recording if recording is not None else make_recording(hello)
      units = rec.num_units
      rx = _Receiver(hello, units)
      rx.next_tick = hello_at + hello["next_tick_ms"] / 1e3
      await ws.send_bytes(P.json_message(P.C_HELLO, {"sample_rate": hello["sample_rate"], "seed": seed, "video": video}))

      async def send_all():
        lead, period, target = lead_ms / 1e3, rx.period, None
        t0 = time.monotonic()
        for k in range(units):
          if realtime and not align:  # our own clock, at whatever phase it has against the server's
            await asyncio.sleep(max(0.0, t0 + k * period - time.monotonic()))
          elif realtime:  # the deadline after the previous one, on the newest estimate of the server's clock
            t = rx.next_tick
            while target is not None and t < target + period / 2:
              t += period
            while t - lead < time.monotonic():  # too late for it: the next one
              t += period
            target = t
            await asyncio.sleep(max(0.0, target - lead - time.monotonic()))
          msgs = unit_messages(rec, k, pcm16)
          rx.sent_at[k] = time.monotonic()
          for m in msgs:
            await ws.send_bytes(m)

      async def receive_all():
        while rx.answered < units:
          msg = await ws.receive()
          if msg.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"{url}: connection ended after {rx.answered}/{units} units "
                                  f"({msg.type.name} {ws.close_code}; {rx.closing or rx.errors[-1:] or ''})")
          rx.feed(msg.data, time.monotonic())

      limit = timeout_s or units * rx.period * 2 + 30
      sender = asyncio.create_task(send_all())
      try:
        await asyncio.wait_for(receive_all(), limit)
        await sender
      finally:
        sender.cancel()
  return ClientResult(rec, hello, rx.out, rx.rtt_ms, rx.step_ms, rx.late_units, rx.errors)


def main(argv):
  from absl import logging
  from wan_streamer_jax.streaming import recording as recording_lib
  del argv
  F = _FLAGS

  def make(hello):
    cfg = sizes_config(hello)
    if F.recording:
      return recording_lib.load_recording(F.recording, cfg)
    return recording_lib.synthetic_recording(cfg, F.split, F.index, seed=F.corpus_seed)

  http_url = F.url.replace("ws://", "http://").replace("wss://", "https://")
  result = asyncio.run(stream_recording(F.url, make_recording=make, seed=F.seed, realtime=not F.fast,
                                        lead_ms=F.lead_ms))
  logging.info("%s through %s: %s", result.recording.name, http_url, result.rtt_summary())
  files = result.write(F.out_dir, mp4=F.mp4)
  print(json.dumps({**result.rtt_summary(), "files": files}, sort_keys=True), flush=True)


_FLAGS = None

if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("url", "ws://127.0.0.1:8998/ws", "The server's WebSocket URL.")
  flags.DEFINE_string("recording", None, "A conversation folder / .wav / .mp4 (default: a synthetic corpus one).")
  flags.DEFINE_string("split", "test", "Synthetic corpus split (without --recording).")
  flags.DEFINE_integer("index", 0, "Synthetic corpus conversation index.")
  flags.DEFINE_integer("corpus_seed", 0, "Synthetic corpus seed.")
  flags.DEFINE_integer("seed", 0, "The conversation's sampling seed.")
  flags.DEFINE_bool("fast", False, "Send as fast as flow control allows instead of in real time.")
  flags.DEFINE_float("lead_ms", 30.0, "Send each unit this long before the server's deadline.")
  flags.DEFINE_bool("mp4", True, "Also write the side-by-side MP4.")
  flags.DEFINE_string("out_dir", "/tmp/wan_talk", "Where the outputs go.")
  _FLAGS = flags.FLAGS
  app.run(main)
