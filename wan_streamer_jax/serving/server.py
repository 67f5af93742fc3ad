"""The aiohttp server: WebSocket `/ws` (protocol.py), the web page `/`, `/stats` (JSON), `/healthz`.

    serve(load_server("/tmp/art"), port=8998, sessions=4)     # blocks; SIGTERM/SIGINT stop it cleanly

One `SlotPool` ticks for every session. Per connection a reader (this handler: decodes, validates,
answers refused messages with ERROR, awaits room in the bounded input buffer) and a writer task (sends
the session's outbox). Shutdown: new connections are refused, every session gets CLOSING and a close
frame (1001), the clock stops after its current step, nothing waits without a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time

import aiohttp
from aiohttp import web

from wan_streamer_jax.serving import protocol
from wan_streamer_jax.serving.pool import PoolFull, Session, SlotPool, StepRunner

log = logging.getLogger("wan_streamer_jax.serving")
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_ERRORS = 256  # refused messages before a connection is closed (1008)
_POOL = web.AppKey("pool", SlotPool)
_STATE = web.AppKey("state", dict)


def make_app(pool: SlotPool) -> web.Application:
  app = web.Application()
  app[_POOL] = pool
  app[_STATE] = {"closing": False, "sockets": {}, "ticker": None}
  app.router.add_get("/", _index)
  app.router.add_get("/ws", _ws_handler)
  app.router.add_get("/stats", _stats)
  app.router.add_get("/healthz", _healthz)
  app.router.add_static("/static/", STATIC_DIR)
  app.on_startup.append(_start_clock)
  app.on_shutdown.append(_close_sessions)
  app.on_cleanup.append(_stop_clock)
  return app


async def _index(request: web.Request) -> web.FileResponse:
  return web.FileResponse(os.path.join(STATIC_DIR, "index.html"))


async def _stats(request: web.Request) -> web.Response:
  return web.json_response(request.app[_POOL].stats())


async def _healthz(request: web.Request) -> web.Response:
  state = request.app[_STATE]
  ok = not state["closing"] and state["ticker"] is not None and not state["ticker"].done()
  return web.json_response({"ok": ok}, status=200 if ok else 503)


async def _start_clock(app: web.Application) -> None:
  pool = app[_POOL]

  async def clock():
    try:
      await pool.run()
    except Exception:  # noqa: BLE001 — a failing step is fatal: log it and shut the server down
      log.exception("the step failed; shutting down")
      app[_STATE]["closing"] = True
      raise

  app[_STATE]["ticker"] = asyncio.create_task(clock(), name="pool-clock")
  log.info("pool: %d sessions on %d slots, %.0f ms per unit, %d-unit input buffers", pool.num_sessions,
           pool.num_slots, pool.period_s * 1e3, pool.buffer_units)


async def _close_sessions(app: web.Application) -> None:
  state = app[_STATE]
  state["closing"] = True
  sockets = list(state["sockets"].items())
  for sess, ws in sockets:
    sess.post([protocol.json_message(protocol.S_CLOSING, {"reason": "server shutting down"})])
  await asyncio.sleep(0.05)  # let the writers flush CLOSING
  await asyncio.gather(*(asyncio.wait_for(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY,
                                                   message=b"server shutting down"), 2.0)
                         for _, ws in sockets), return_exceptions=True)


async def _stop_clock(app: web.Application) -> None:
  pool, ticker = app[_POOL], app[_STATE]["ticker"]
  pool.stop()
  if ticker is not None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
      await asyncio.wait_for(ticker, 10.0)
  await asyncio.get_running_loop().run_in_executor(None, pool.close)
  log.info("pool stopped after %d steps (%d deadline misses)", pool.ticks, pool.deadline_misses)


async def _writer(ws: web.WebSocketResponse, sess: Session) -> None:
  while True:
    msgs = await sess.outbox.get()
    for m in msgs:
      await ws.send_bytes(m)


def _refuse(sess: Session, err: protocol.ProtocolError) -> None:
  sess.stats.errors += 1
  log.info("session %d: refused %s: %s", sess.id, err.code, err)
  sess.post([protocol.error_message(err.code, str(err))])


async def _handle(sess: Session, data: bytes) -> None:
  """One client message; raises ProtocolError for anything refused."""
  if not data:
    raise protocol.ProtocolError("empty", "message: expected a type byte + payload, received an empty message")
  kind, body = data[0], memoryview(data)[1:]
  spec = sess.spec
  if kind == protocol.C_HELLO:
    sess.configure(protocol.decode_hello(body, spec))
  elif kind in (protocol.C_AUDIO_PCM16, protocol.C_AUDIO_F32):
    unit = sess.close_unit(protocol.decode_audio(kind, body, spec))
    await sess.units.put(unit)  # flow control: waits while the buffer is full
    sess.stats.max_buffered = max(sess.stats.max_buffered, sess.units.qsize())
  elif kind == protocol.C_VIDEO_FRAME:
    sess.add_frame(protocol.decode_frame(body, spec))
  elif kind == protocol.C_TEXT:
    sess.add_text(protocol.decode_text(body))
  elif kind == protocol.C_TEXT_TOKENS:
    sess.add_text(protocol.decode_text_tokens(body))
  else:
    raise protocol.ProtocolError("unknown_type", f"message type: expected 0x00-0x05, received 0x{kind:02x}")


async def _ws_handler(request: web.Request) -> web.WebSocketResponse:
  app, pool = request.app, request.app[_POOL]
  ws = web.WebSocketResponse(max_msg_size=protocol.MAX_MESSAGE_BYTES, compress=False)
  await ws.prepare(request)
  peer = request.remote or "?"
  if app[_STATE]["closing"]:
    await ws.send_bytes(protocol.json_message(protocol.S_CLOSING, {"reason": "server shutting down"}))
    await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")
    return ws
  try:
    sess = pool.attach(peer)
  except PoolFull as e:
    log.info("refused %s: %s", peer, e)
    await ws.send_bytes(protocol.error_message("pool_full", str(e)))
    await ws.close(code=aiohttp.WSCloseCode.TRY_AGAIN_LATER, message=b"pool full")
    return ws
  sp = pool.spec
  await ws.send_bytes(protocol.json_message(protocol.S_HELLO, {
      "protocol": protocol.PROTOCOL_VERSION, "session": sess.id, "slot": sess.slot, "sample_rate": sp.sample_rate,
      "samples_per_unit": sp.samples_per_unit, "frames_per_unit": sp.frames_per_unit, "height": sp.height,
      "width": sp.width, "text_slots": sp.text_slots, "unit_ms": pool.period_s * 1e3,
      "next_tick_ms": max(0.0, (pool.next_tick - time.monotonic()) * 1e3)}))
  log.info("session %d: connected from %s (slot %d)", sess.id, peer, sess.slot)
  app[_STATE]["sockets"][sess] = ws
  writer = asyncio.create_task(_writer(ws, sess), name=f"writer-{sess.id}")
  reason = "client closed"
  try:
    async for msg in ws:
      if msg.type == aiohttp.WSMsgType.BINARY:
        try:
          await _handle(sess, msg.data)
        except protocol.ProtocolError as e:
          _refuse(sess, e)
      elif msg.type == aiohttp.WSMsgType.TEXT:
        _refuse(sess, protocol.ProtocolError("text_frame", "message: expected binary WebSocket messages (type "
                                                           f"byte + payload), received a text message of {len(msg.data)} chars"))
      elif msg.type == aiohttp.WSMsgType.ERROR:
        exc = ws.exception()
        if getattr(exc, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
          reason = f"message over {protocol.MAX_MESSAGE_BYTES} bytes (closed 1009)"
          await ws.close(code=aiohttp.WSCloseCode.MESSAGE_TOO_BIG, message=b"message too big")
        else:
          reason = f"socket error: {exc}"
        break
      if sess.stats.errors > MAX_ERRORS:
        reason = f"more than {MAX_ERRORS} refused messages"
        await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"too many refused messages")
        break
  finally:
    sess.close_reason = reason
    pool.release(sess)
    app[_STATE]["sockets"].pop(sess, None)
    await asyncio.sleep(0)  # let the writer send what is queued before it is cancelled
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
      await writer
    log.info("session %d: closed (%s): %s", sess.id, reason, sess.summary())
  return ws


# ------------------------------------------------------------------ running it

async def _run_site(app: web.Application, host: str, port: int, stop: asyncio.Event, ready=None) -> None:
  runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
  await runner.setup()
  site = web.TCPSite(runner, host, port)
  await site.start()
  bound = runner.addresses[0][1]
  if ready is not None:
    ready(bound)
  log.info("serving on http://%s:%d/ (WebSocket /ws)", host, bound)
  ticker = app[_STATE]["ticker"]
  done = asyncio.ensure_future(stop.wait())
  await asyncio.wait([done, ticker], return_when=asyncio.FIRST_COMPLETED)
  done.cancel()
  log.info("shutting down: telling %d sessions", len(app[_STATE]["sockets"]))
  await runner.cleanup()


def serve(runner: StepRunner, host: str = "127.0.0.1", port: int = 8998, sessions: int | None = None,
          **pool_kwargs) -> None:
  """Serves until SIGTERM / SIGINT (clean shutdown: sessions told, nothing hangs)."""

  async def main():
    pool = SlotPool(runner, sessions, **pool_kwargs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(sig, stop.set)
    await _run_site(make_app(pool), host, port, stop)

  asyncio.run(main())


class ServerThread:
  """The server on a background thread (tests, benchmarks): `.url`, `.pool`, `.stop()`."""

  def __init__(self, runner: StepRunner, host: str = "127.0.0.1", port: int = 0, sessions: int | None = None,
               **pool_kwargs):
    self.pool = SlotPool(runner, sessions, **pool_kwargs)
    self._host, self._port = host, port
    self._started = threading.Event()
    self._loop: asyncio.AbstractEventLoop | None = None
    self._stop: asyncio.Event | None = None
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._main, name="wan-server", daemon=True)
    self._thread.start()
    if not self._started.wait(60) or self._error:
      raise RuntimeError(f"server did not start: {self._error}")
    self.url = f"http://{host}:{self.port}"

  def _main(self) -> None:
    async def main():
      self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

      def ready(port):
        self.port = port
        self._started.set()
      await _run_site(make_app(self.pool), self._host, self._port, self._stop, ready)

    try:
      asyncio.run(main())
    except BaseException as e:  # noqa: BLE001
      self._error = e
      self._started.set()

  def stop(self, timeout: float = 20.0) -> None:
    if self._loop is not None and self._thread.is_alive():
      self._loop.call_soon_threadsafe(self._stop.set)
    self._thread.join(timeout)
    if self._thread.is_alive():
      raise RuntimeError(f"server thread did not stop within {timeout} s")

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()
