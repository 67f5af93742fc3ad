"""The duplex server over a real exported artifact (tiny config, random init), on loopback.

Every client loop is bounded (a unit count or a timeout) and stops by itself.
"""

import asyncio
import json
import os
import time

import aiohttp
import numpy as np
from scipy.io import wavfile

from tests.serving_helpers import alone, artifact, assert_same_outputs, recording, runner  # noqa: F401
from wan_streamer_jax.serving import protocol as P
from wan_streamer_jax.serving.client import stream_recording
from wan_streamer_jax.serving.server import ServerThread

UNIT_S = 0.16
LEAD_MS = 150  # real-time clients send a unit ~one unit before its deadline: robust to a loaded machine


async def _connect(http, server):
  ws = await http.ws_connect(server.url + "/ws", max_msg_size=P.MAX_MESSAGE_BYTES)
  kind, hello = P.parse_server_message((await ws.receive(timeout=10)).data)
  assert kind == P.S_HELLO, hello
  return ws, hello


async def _receive_until(ws, kinds, timeout=10.0):
  """Messages until one of type in `kinds` arrives (bounded by `timeout`)."""
  got = []
  deadline = time.monotonic() + timeout
  while True:
    msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
    if msg.type != aiohttp.WSMsgType.BINARY:
      return got, msg
    got.append(P.parse_server_message(msg.data))
    if got[-1][0] in kinds:
      return got, msg


def _finished(server, n, timeout=5.0):
  deadline = time.monotonic() + timeout
  while len(server.pool.finished) < n and time.monotonic() < deadline:
    time.sleep(0.02)
  return list(server.pool.finished)


def test_three_concurrent_sessions_get_what_each_gets_alone(runner):
  recs = [recording(i, 12) for i in (0, 1, 2)]
  seeds = (0, 7, 11)

  async def main(server):
    async def late_start():
      await asyncio.sleep(0.5)  # another phase of the pool's clock, another slot history
      return await stream_recording(server.url + "/ws", recs[2], seed=seeds[2], lead_ms=LEAD_MS)
    return await asyncio.gather(
        stream_recording(server.url + "/ws", recs[0], seed=seeds[0], lead_ms=LEAD_MS),
        stream_recording(server.url + "/ws", recs[1], seed=seeds[1], realtime=False),
        late_start())

  with ServerThread(runner, sessions=4) as server:
    results = asyncio.run(main(server))
  refs = [alone(runner, r, s) for r, s in zip(recs, seeds)]
  assert not np.array_equal(refs[0]["audio"], refs[1]["audio"])  # different dialogues, different answers
  for i, (res, ref) in enumerate(zip(results, refs)):
    assert res.late_units == 0 and not res.errors, (i, res.late_units, res.errors)
    assert_same_outputs(res.outputs, ref, f"session {i}")
    assert np.all(np.isfinite(res.rtt_ms))


def test_disconnect_frees_the_slot_and_a_full_pool_refuses(runner, tmp_path):
  rec_a, rec_b = recording(0, 10), recording(1, 8)

  async def main(server):
    async with aiohttp.ClientSession() as http:
      ws_a, _ = await _connect(http, server)
      for k in range(5):
        await ws_a.send_bytes(P.audio_f32_message(rec_a.audio[k * 2560:(k + 1) * 2560]))
      await _receive_until(ws_a, {P.S_TEXT})  # the pool is serving A
      ws_full = await http.ws_connect(server.url + "/ws")
      kind, err = P.parse_server_message((await ws_full.receive(timeout=10)).data)
      closed = await ws_full.receive(timeout=10)
      await ws_a.close()  # mid-stream
      return kind, err, closed.type, ws_full.close_code

  with ServerThread(runner, sessions=1) as server:
    kind, err, closed, code = asyncio.run(main(server))
    assert (kind, err["code"]) == (P.S_ERROR, "pool_full") and "all 1 sessions" in err["message"]
    assert closed == aiohttp.WSMsgType.CLOSE and code == 1013
    summary = _finished(server, 1)  # the refused connection never held a slot
    assert [s["units_in"] for s in summary] == [5]
    assert not server.pool.sessions
    res = asyncio.run(stream_recording(server.url + "/ws", rec_b, seed=3, realtime=False))
  assert_same_outputs(res.outputs, alone(runner, rec_b, 3), "the next session")  # a fresh conversation
  files = res.write(str(tmp_path))  # the client writes what launch.stream writes, + the round trips
  rate, wav = wavfile.read(files["wav"])
  assert rate == 16000 and wav.shape == (8 * 2560, 2)
  np.testing.assert_allclose(wav[:, 1] / 32767.0, np.clip(res.outputs["audio"].reshape(-1), -1, 1), atol=1.5 / 32767)
  assert os.path.getsize(files["mp4"]) > 1000 and os.path.exists(files["transcript"])
  with open(files["rtt"]) as f:
    rtt = json.load(f)
  assert len(rtt["rtt_ms"]) == 8 and rtt["late_units"] == 0


def test_fast_client_is_flow_controlled_and_slow_or_silent_ones_delay_nobody(runner):
  rec, units = recording(2, 20), 20
  buffer_units = 3

  async def slow(server):
    async with aiohttp.ClientSession() as http:
      ws, _ = await _connect(http, server)
      infos = []
      for k in range(6):  # one unit every two deadlines
        await ws.send_bytes(P.audio_f32_message(np.zeros(2560, np.float32)))
        t_end = time.monotonic() + 2 * UNIT_S
        while time.monotonic() < t_end:
          try:
            msg = await ws.receive(timeout=max(0.01, t_end - time.monotonic()))
          except asyncio.TimeoutError:
            break
          kind, body = P.parse_server_message(msg.data)
          if kind == P.S_INFO:
            infos.append(body)
      await ws.close()
      return infos

  async def silent(server, stop):
    async with aiohttp.ClientSession() as http:
      ws, _ = await _connect(http, server)
      await ws.send_bytes(P.json_message(P.C_HELLO, {"seed": 1}))
      got = []
      while not stop.is_set():
        try:
          got.append((await ws.receive(timeout=0.2)).data)
        except asyncio.TimeoutError:
          pass
      await ws.close()
      return got

  async def main(server):
    stop = asyncio.Event()
    silent_task = asyncio.create_task(silent(server, stop))
    t0 = time.monotonic()
    fast_res, slow_infos = await asyncio.gather(stream_recording(server.url + "/ws", rec, seed=5, realtime=False),
                                                slow(server))
    fast_s = time.monotonic() - t0
    stop.set()
    return fast_res, fast_s, slow_infos, await silent_task

  with ServerThread(runner, sessions=3, buffer_units=buffer_units) as server:
    fast, fast_s, slow_infos, silent_msgs = asyncio.run(main(server))
    summaries = {s["seed"]: s for s in _finished(server, 3)}
  assert_same_outputs(fast.outputs, alone(runner, rec, 5), "fast client")
  assert fast.late_units == 0, fast.late_units
  assert summaries[5]["max_buffered"] <= buffer_units  # bounded: the rest waits in TCP, unread
  assert fast_s >= (units - buffer_units - 2) * UNIT_S  # paced by the pool's clock, not buffered ahead
  assert slow_infos and max(i["late_units"] for i in slow_infos) >= 3  # the slow one got silence
  assert summaries[0]["units_in"] == 6
  assert silent_msgs == [] and summaries[1]["units_out"] == 0  # never sent a unit: frozen, no outputs


def test_bad_messages_get_errors_and_every_session_keeps_streaming(runner):
  rec = recording(0, 10)
  spu = 2560
  nan = np.zeros(spu, np.float32)
  nan[3] = np.nan
  raw = P.raw_frame_message(np.zeros((16, 16, 3), np.uint8))
  bad = [
      (P.json_message(P.C_HELLO, {"sample_rate": 48000}), "sample_rate"),
      (b"", "empty"), (b"\x09abc", "unknown_type"), ("text frame", "text_frame"),
      (bytes([P.C_AUDIO_PCM16]) + b"\x00" * 1001, "audio_size"),  # truncated
      (P.audio_pcm16_message(np.zeros(7680, np.float32)), "audio_size"),  # 160 ms at 48 kHz
      (P.audio_f32_message(nan), "audio_not_finite"),
      (P.audio_f32_message(np.full(spu, 2.0, np.float32)), "audio_range"),
      (raw[:-7], "frame_size"), (bytes([P.C_VIDEO_FRAME, P.FRAME_RAW, 1]), "frame_truncated"),
      (bytes([P.C_VIDEO_FRAME, P.FRAME_JPEG]) + b"\xff" * (P.MAX_FRAME_BYTES + 10), "frame_size"),  # oversized
      (bytes([P.C_VIDEO_FRAME, P.FRAME_JPEG]) + b"\xff\xd8garbage", "frame_format"),
      (P.text_message("x" * (P.MAX_TEXT_BYTES + 1)), "text_size"),
      (P.text_tokens_message([1, 999]), "text_tokens_range"),
  ] + [(raw, None)] * 4 + [(raw, "too_many_frames")]

  async def misbehave(server):
    async with aiohttp.ClientSession() as http:
      ws, _ = await _connect(http, server)
      codes = []
      for msg, code in bad:
        await (ws.send_str(msg) if isinstance(msg, str) else ws.send_bytes(msg))
        if code:
          got, _ = await _receive_until(ws, {P.S_ERROR}, timeout=5)
          codes.append(got[-1][1]["code"])
      await ws.send_bytes(P.audio_f32_message(np.zeros(spu, np.float32)))  # valid units still work
      got, _ = await _receive_until(ws, {P.S_INFO}, timeout=5)
      info = got[-1][1]
      try:  # over the frame cap: closed (1009); the server may close while the 4 MiB are still being sent
        await ws.send_bytes(b"\x01" + bytes(P.MAX_MESSAGE_BYTES + 1))
      except (ConnectionError, aiohttp.ClientConnectionError):
        return codes, info, aiohttp.WSMsgType.CLOSED, ws.close_code
      _, end = await _receive_until(ws, set(), timeout=5)
      return codes, info, end.type, ws.close_code

  async def main(server):
    return await asyncio.gather(stream_recording(server.url + "/ws", rec, seed=2, lead_ms=LEAD_MS), misbehave(server))

  with ServerThread(runner, sessions=2) as server:
    good, (codes, info, end, close_code) = asyncio.run(main(server))
    reasons = [s["close_reason"] for s in _finished(server, 2) if s["errors"]]
  assert codes == [c for _, c in bad if c]
  assert info["input_seq"] == 0 and info["flags"] == 1  # its first unit, a fresh conversation
  # over the frame cap: the server closes with 1009 (the client may see the close or a reset mid-send)
  assert end != aiohttp.WSMsgType.BINARY and close_code in (1009, 1006, None), (end, close_code)
  assert len(reasons) == 1 and "1009" in reasons[0], reasons
  assert good.late_units == 0 and not good.errors, (good.late_units, good.errors)
  assert_same_outputs(good.outputs, alone(runner, rec, 2), "the well-behaved session")


def test_shutdown_tells_every_session(runner):
  async def main(server):
    async with aiohttp.ClientSession() as http:
      ws, _ = await _connect(http, server)
      await ws.send_bytes(P.audio_f32_message(np.zeros(2560, np.float32)))
      await _receive_until(ws, {P.S_TEXT})
      t0 = time.monotonic()
      stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
      got, end = await _receive_until(ws, set(), timeout=10)
      await stopper
      return [k for k, _ in got], end.type, ws.close_code, time.monotonic() - t0

  server = ServerThread(runner, sessions=2)
  kinds, end, code, seconds = asyncio.run(main(server))
  assert P.S_CLOSING in kinds and end == aiohttp.WSMsgType.CLOSE and code == 1001
  assert seconds < 10
