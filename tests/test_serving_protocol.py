"""The serving protocol's encoders/decoders: round trips and every refusal names what was expected."""

import io
import json

import numpy as np
import pytest

from wan_streamer_jax.config import TextConfig
from wan_streamer_jax.serving import protocol as P

SPEC = P.StreamSpec(sample_rate=16000, samples_per_unit=2560, frames_per_unit=4, height=16, width=16, text_slots=4)


def _body(msg: bytes) -> bytes:
  return msg[1:]


def test_audio_round_trips_and_refusals():
  x = np.linspace(-1, 1, 2560, dtype=np.float32)
  np.testing.assert_array_equal(P.decode_audio(P.C_AUDIO_F32, _body(P.audio_f32_message(x)), SPEC), x)
  y = P.decode_audio(P.C_AUDIO_PCM16, _body(P.audio_pcm16_message(x)), SPEC)
  assert np.abs(y - x).max() < 1 / 16000
  at_48k = np.zeros(7680, np.float32)  # 160 ms at 48 kHz
  with pytest.raises(P.ProtocolError, match=r"expected 2560 samples .* received 15360 bytes .*48000 Hz") as e:
    P.decode_audio(P.C_AUDIO_PCM16, _body(P.audio_pcm16_message(at_48k)), SPEC)
  assert e.value.code == "audio_size"
  with pytest.raises(P.ProtocolError, match="received 3 bytes"):
    P.decode_audio(P.C_AUDIO_PCM16, b"abc", SPEC)
  nan = x.copy()
  nan[7] = np.nan
  with pytest.raises(P.ProtocolError, match="1 NaN/inf") as e:
    P.decode_audio(P.C_AUDIO_F32, _body(P.audio_f32_message(nan)), SPEC)
  assert e.value.code == "audio_not_finite"
  with pytest.raises(P.ProtocolError, match=r"in \[-1, 1\], received a peak of 3"):
    P.decode_audio(P.C_AUDIO_F32, _body(P.audio_f32_message(x * 3)), SPEC)


def test_frames_raw_jpeg_resize_and_refusals():
  from PIL import Image
  rng = np.random.default_rng(0)
  f = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
  np.testing.assert_array_equal(P.decode_frame(_body(P.raw_frame_message(f))[0:], SPEC), f)
  big = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
  assert P.decode_frame(_body(P.raw_frame_message(big)), SPEC).shape == (16, 16, 3)
  smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 1, 3))
  buf = io.BytesIO()
  Image.fromarray(smooth).save(buf, format="JPEG", quality=95)
  got = P.decode_frame(_body(P.jpeg_frame_message(buf.getvalue())), SPEC)
  assert np.abs(got.astype(int) - smooth).max() < 12
  cases = [(b"", "frame_truncated"), (bytes([P.FRAME_RAW, 4]), "frame_truncated"),
           (_body(P.raw_frame_message(f))[:-5], "frame_size"), (bytes([P.FRAME_JPEG]) + b"not a jpeg", "frame_format"),
           (bytes([7]) + b"xx", "frame_format"), (bytes([P.FRAME_JPEG]) + bytes(P.MAX_FRAME_BYTES + 1), "frame_size")]
  png = io.BytesIO()
  Image.fromarray(f).save(png, format="PNG")
  cases.append((bytes([P.FRAME_JPEG]) + png.getvalue(), "frame_format"))
  for body, code in cases:
    with pytest.raises(P.ProtocolError) as e:
      P.decode_frame(body, SPEC)
    assert e.value.code == code, (body[:8], e.value)


def test_text_and_tokens():
  toks = P.decode_text(_body(P.text_message("what is  3")))
  assert toks == [*b"what", TextConfig.WORD_END, *b"is", TextConfig.WORD_END, *b"3", TextConfig.WORD_END,
                  TextConfig.END_OF_TURN]
  assert P.decode_text(b"   ") == []
  assert P.decode_text_tokens_to_str(toks) == "what is 3 \n"
  row = [104, 105, TextConfig.WORD_END, TextConfig.MISSING]
  assert P.decode_text_tokens(_body(P.text_tokens_message(row))) == row
  for body, code in [(bytes(P.MAX_TEXT_BYTES + 1), "text_size"), (b"\xff\xfe", "text_encoding")]:
    with pytest.raises(P.ProtocolError) as e:
      P.decode_text(body)
    assert e.value.code == code
  with pytest.raises(P.ProtocolError, match=r"ids in \[0, 260\), received \[300\]"):
    P.decode_text_tokens(_body(P.text_tokens_message([1, 300])))
  with pytest.raises(P.ProtocolError, match="even number"):
    P.decode_text_tokens(b"abc")


def test_hello():
  assert P.decode_hello(b"", SPEC) == {"seed": 0, "video": True}
  assert P.decode_hello(json.dumps({"sample_rate": 16000, "seed": 5, "video": False}).encode(), SPEC) == \
      {"seed": 5, "video": False}
  with pytest.raises(P.ProtocolError, match=r"sample_rate: expected 16000 Hz .* received 48000") as e:
    P.decode_hello(b'{"sample_rate": 48000}', SPEC)
  assert e.value.code == "sample_rate"
  for body in (b"{not json", b"[1]", b'{"seed": -1}', b'{"seed": 1.5}', b'{"video": 1}'):
    with pytest.raises(P.ProtocolError) as e:
      P.decode_hello(body, SPEC)
    assert e.value.code == "bad_hello"


def test_server_messages_round_trip():
  rng = np.random.default_rng(1)
  audio = rng.standard_normal(2560).astype(np.float32)
  video = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
  text = np.array([104, TextConfig.WORD_END, TextConfig.END_OF_TURN, TextConfig.PAD], np.int32)
  msgs = P.unit_messages(7, 3, 2, True, 1, 12.5, 13.0, 140.0, 2, audio, video, text)
  parsed = [P.parse_server_message(m) for m in msgs]
  assert [k for k, _ in parsed] == [P.S_INFO, P.S_AUDIO, P.S_VIDEO, P.S_TEXT]
  info = parsed[0][1]
  assert (info["unit"], info["input_seq"], info["turn_state"], info["flags"], info["queued_units"],
          info["late_units"]) == (7, 3, 2, 1, 1, 2)
  assert info["step_ms"] == pytest.approx(12.5)
  assert parsed[1][1][0] == 7 and np.array_equal(parsed[1][1][1], audio)
  assert np.array_equal(parsed[2][1][1], video)
  assert np.array_equal(parsed[3][1][1], text)
  assert len(P.unit_messages(7, -1, 0, False, 0, 1, 1, 1, 0, audio, None, text)) == 3  # video off
  kind, err = P.parse_server_message(P.error_message("x", "y"))
  assert (kind, err) == (P.S_ERROR, {"code": "x", "message": "y"})


def test_stream_spec_from_manifest():
  manifest = {"sample_rate": 16000, "inputs": {
      "audio": {"shape": [3, 2560]}, "video": {"shape": [3, 4, 16, 24, 3]}, "camera_on": {"shape": [3]},
      "text": {"shape": [3, 4]}}}
  spec = P.StreamSpec.from_manifest(manifest)
  assert (spec.samples_per_unit, spec.height, spec.width, spec.text_slots) == (2560, 16, 24, 4)
  assert spec.unit_seconds == pytest.approx(0.16)
  with pytest.raises(ValueError, match=r"expected \['camera_on'\]"):
    P.StreamSpec.from_manifest({"sample_rate": 16000, "inputs": {k: v for k, v in manifest["inputs"].items()
                                                                  if k != "camera_on"}})
  with pytest.raises(ValueError, match="sample_rate"):
    P.StreamSpec.from_manifest({"inputs": manifest["inputs"]})
