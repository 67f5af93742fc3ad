"""The slot pool: one exported step every 160 ms serves every connected session.

A `StepRunner` is anything with load_server's interface: `.manifest` (dict with the stream sizes and
`num_slots`), `.init_state(seed)`, `.step(state, inputs, active, reset) -> (state, outputs)`.

Per tick (deadline every `period_s`, absolute schedule) and per slot:
  * no session, or a session that has not sent its first unit: `active=False` (state frozen);
  * a session with a unit in its buffer: that unit, `active=True` (`reset=True` on its first one);
  * a streaming session whose unit has not arrived by the deadline: silence for its user streams
    (audio zeros, camera off, PAD text), counted in `late_units`; the pool never waits for it.
The step runs in a worker thread, so sockets keep being served while it computes. Its outputs go to
each session's bounded outbox (a client that does not read loses its oldest units, counted in
`dropped_units`). The input buffer is bounded too (`buffer_units`): the reader awaits room in it,
so a client sending faster than real time is held back by TCP (flow control), never buffered
without bound.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import time
from typing import Any, Protocol

import numpy as np

from wan_streamer_jax.config import TextConfig
from wan_streamer_jax.serving import protocol

log = logging.getLogger("wan_streamer_jax.serving")
MAX_TEXT_QUEUE = 4 * protocol.MAX_TEXT_BYTES  # typed tokens waiting for units


class StepRunner(Protocol):
  manifest: dict

  def init_state(self, seed: int) -> Any: ...

  def step(self, state: Any, inputs: dict, active: np.ndarray, reset: np.ndarray) -> tuple[Any, dict]: ...


class PoolFull(Exception):
  pass


@dataclasses.dataclass
class UserUnit:
  """One client unit: audio float32 [spu], video uint8 [4, H, W, 3], camera_on, text int32 [slots]."""

  seq: int
  audio: np.ndarray
  video: np.ndarray
  camera_on: bool
  text: np.ndarray


@dataclasses.dataclass
class SessionStats:
  units_in: int = 0  # client units received
  units_out: int = 0  # model units sent to the outbox
  late_units: int = 0  # ticks where its unit had not arrived (silence given)
  dropped_units: int = 0  # model units dropped because the client did not read them
  errors: int = 0  # refused messages
  max_buffered: int = 0  # most client units ever waiting (<= buffer_units)
  camera_units: int = 0  # client units with the camera on (at least one frame)
  text_tokens: int = 0  # typed text tokens received
  input_rms: float = 0.0  # RMS of all the audio received


class Session:
  """One connection's buffers. Input side is fed by the server's reader, output side by the pool."""

  def __init__(self, sid: int, slot: int, spec: protocol.StreamSpec, peer: str, buffer_units: int,
               outbox_units: int):
    self.id, self.slot, self.spec, self.peer = sid, slot, spec, peer
    self.seed, self.send_video = 0, True
    self.units: asyncio.Queue[UserUnit] = asyncio.Queue(maxsize=buffer_units)
    self.outbox: asyncio.Queue[list[bytes]] = asyncio.Queue(maxsize=outbox_units)
    self.stats = SessionStats()
    self.started = False  # has sent a unit: from then on its clock runs
    self.needs_reset = True
    self.connected_at = time.monotonic()
    self.close_reason = ""  # set by the server when the connection ends
    self._frames: list[np.ndarray] = []
    self._text: collections.deque[int] = collections.deque()
    self._seq = itertools.count()

  def configure(self, hello: dict) -> None:
    if self.started:
      raise protocol.ProtocolError("late_hello", "hello: expected before the first unit, received after it")
    self.seed, self.send_video = hello["seed"], hello["video"]

  def add_frame(self, frame: np.ndarray) -> None:
    if len(self._frames) >= protocol.MAX_FRAMES_PER_UNIT:
      raise protocol.ProtocolError("too_many_frames", f"video_frame: expected at most {protocol.MAX_FRAMES_PER_UNIT}"
                                                      " frames per unit (25 fps), received another; dropped")
    self._frames.append(frame)

  def add_text(self, tokens: list[int]) -> None:
    if len(self._text) + len(tokens) > MAX_TEXT_QUEUE:
      raise protocol.ProtocolError("text_queue_full", f"text: at most {MAX_TEXT_QUEUE} tokens may wait for units, "
                                                      f"{len(self._text)} are waiting, received {len(tokens)} more")
    self._text.extend(tokens)
    self.stats.text_tokens += len(tokens)

  def close_unit(self, audio: np.ndarray) -> UserUnit:
    """The unit's audio arrived: bundle it with the frames and text sent since the last unit."""
    spec = self.spec
    video = np.zeros((spec.frames_per_unit, spec.height, spec.width, 3), np.uint8)
    camera_on = bool(self._frames)
    for i in range(spec.frames_per_unit if camera_on else 0):
      video[i] = self._frames[min(i, len(self._frames) - 1)]
    text = np.full(spec.text_slots, TextConfig.PAD, np.int32)
    for i in range(min(spec.text_slots, len(self._text))):
      text[i] = self._text.popleft()
    self._frames = []
    st = self.stats
    st.input_rms = float(np.sqrt((st.input_rms ** 2 * st.units_in + np.mean(np.square(audio))) / (st.units_in + 1)))
    st.units_in += 1
    st.camera_units += camera_on
    return UserUnit(next(self._seq), audio, video, camera_on, text)

  def post(self, messages: list[bytes]) -> None:
    """Queues messages for the writer; a full outbox drops its oldest entry (the client is not reading)."""
    if self.outbox.full():
      self.outbox.get_nowait()
      self.stats.dropped_units += 1
    self.outbox.put_nowait(messages)

  def summary(self) -> dict:
    return {"id": self.id, "slot": self.slot, "peer": self.peer, "seed": self.seed,
            "buffered": self.units.qsize(), "seconds": round(time.monotonic() - self.connected_at, 2),
            "close_reason": self.close_reason,
            **dataclasses.asdict(self.stats)}


class SlotPool:
  """`num_sessions` slots over one step runner, stepped every `period_s` (160 ms; tests may run faster)."""

  def __init__(self, runner: StepRunner, num_sessions: int | None = None, buffer_units: int = 4,
               outbox_units: int = 16, period_s: float | None = None, seed: int = 0):
    self.runner, self.manifest = runner, runner.manifest
    self.spec = protocol.StreamSpec.from_manifest(self.manifest)
    slots = int(self.manifest.get("num_slots", 0))
    self.num_sessions = num_sessions or slots
    if not 1 <= self.num_sessions <= slots:
      raise ValueError(f"sessions: expected 1..{slots} (the artifact's num_slots), received {num_sessions}")
    if buffer_units < 1 or outbox_units < 1:
      raise ValueError(f"buffer_units/outbox_units: expected >= 1, received {buffer_units}/{outbox_units}")
    self.num_slots, self.buffer_units, self.outbox_units = slots, buffer_units, outbox_units
    self.period_s = float(period_s or self.spec.unit_seconds)
    self.uses_seed = "seed" in self.manifest.get("inputs", {})
    self._state = runner.init_state(seed)
    self._slots: list[Session | None] = [None] * slots
    self._ids = itertools.count(1)
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="step")
    self._stopping = False
    self.next_tick = time.monotonic()
    self.ticks = self.deadline_misses = 0
    self.step_ms: collections.deque[float] = collections.deque(maxlen=4096)
    self.finished: collections.deque[dict] = collections.deque(maxlen=64)  # summaries of closed sessions
    self._inputs = self._silent_inputs()
    self._warm_up()

  def _warm_up(self) -> None:
    """Compiles the step before any session connects: one step with every slot inactive (state unchanged)."""
    t0 = time.perf_counter()
    off = np.zeros(self.num_slots, bool)
    self._step(self._silent_inputs(), off, off)
    log.info("step compiled and run once in %.1f s", time.perf_counter() - t0)

  # ------------------------------------------------------------ sessions

  def attach(self, peer: str) -> Session:
    free = [s for s in range(self.num_sessions) if self._slots[s] is None]
    if not free:
      raise PoolFull(f"all {self.num_sessions} sessions of this server are in use; try again later")
    s = Session(next(self._ids), free[0], self.spec, peer, self.buffer_units, self.outbox_units)
    self._slots[s.slot] = s
    return s

  def release(self, session: Session) -> None:
    if self._slots[session.slot] is session:
      self._slots[session.slot] = None  # the next session in this slot starts with reset
      self.finished.append(session.summary())

  @property
  def sessions(self) -> list[Session]:
    return [s for s in self._slots if s is not None]

  def stats(self) -> dict:
    ms = np.asarray(self.step_ms) if self.step_ms else np.zeros(1)
    return {"ticks": self.ticks, "deadline_misses": self.deadline_misses, "sessions": len(self.sessions),
            "capacity": self.num_sessions, "period_ms": self.period_s * 1e3,
            "step_ms_p50": round(float(np.percentile(ms, 50)), 3), "step_ms_p99": round(float(np.percentile(ms, 99)), 3),
            "per_session": [s.summary() for s in self.sessions], "finished": list(self.finished)}

  # ------------------------------------------------------------ one tick

  def _silent_inputs(self) -> dict:
    """Neutral inputs `[S, ...]` in the manifest's dtypes: zero audio/video, camera off, PAD text, seed 0."""
    specs = self.manifest["inputs"]
    unknown = sorted(set(specs) - {"audio", "video", "camera_on", "text", "seed"})
    if unknown:
      raise ValueError(f"manifest.inputs: expected audio, video, camera_on, text[, seed], received also {unknown}")
    out = {k: np.zeros(spec["shape"], np.dtype(spec["dtype"])) for k, spec in specs.items()}
    out["text"][:] = TextConfig.PAD
    return out

  def gather(self) -> tuple[dict, np.ndarray, np.ndarray, list]:
    """Inputs for this tick: `(inputs, active [S], reset [S], taken)`; `taken[s]` = (session, unit|None)."""
    S = self.num_slots
    inputs = {k: v.copy() for k, v in self._inputs.items()}
    active, reset = np.zeros(S, bool), np.zeros(S, bool)
    taken: list = [None] * S
    for s, sess in enumerate(self._slots):
      if sess is None:
        continue
      unit = None
      if not sess.units.empty():
        unit = sess.units.get_nowait()
        sess.started = True
      elif sess.started:
        sess.stats.late_units += 1
      else:
        continue  # nothing sent yet: frozen
      active[s] = True
      reset[s] = sess.needs_reset
      sess.needs_reset = False
      if self.uses_seed:
        inputs["seed"][s] = sess.seed
      if unit is not None:
        inputs["audio"][s], inputs["video"][s] = unit.audio, unit.video
        inputs["camera_on"][s], inputs["text"][s] = unit.camera_on, unit.text
      taken[s] = (sess, unit, bool(reset[s]))
    return inputs, active, reset, taken

  def scatter(self, outputs: dict, taken: list, step_ms: float, tick_t: float) -> None:
    """Sends each still-connected session its unit of the outputs."""
    now = time.monotonic()
    for s, entry in enumerate(taken):
      if entry is None:
        continue
      sess, unit, was_reset = entry
      if self._slots[s] is not sess:
        continue  # disconnected during the step
      unit_index = int(outputs["unit"][s]) if "unit" in outputs else sess.stats.units_out
      msgs = protocol.unit_messages(
          unit_index, unit.seq if unit is not None else -1, int(outputs["turn_state"][s]), was_reset,
          sess.units.qsize(), step_ms, (now - tick_t) * 1e3, (self.next_tick - now) * 1e3, sess.stats.late_units,
          outputs["audio"][s], outputs["video"][s] if sess.send_video else None, outputs["text"][s])
      sess.stats.units_out += 1
      sess.post(msgs)

  def _step(self, inputs, active, reset):
    t0 = time.perf_counter()
    state, outputs = self.runner.step(self._state, inputs, active, reset)
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    self._state = state
    return outputs, (time.perf_counter() - t0) * 1e3

  # ------------------------------------------------------------ the clock

  async def run(self) -> None:
    """Ticks until `stop()`: gather, step (worker thread), scatter; absolute 160 ms deadlines."""
    loop = asyncio.get_running_loop()
    self.next_tick = time.monotonic() + self.period_s
    while not self._stopping:
      delay = self.next_tick - time.monotonic()
      if delay > 0:
        await asyncio.sleep(delay)
      if self._stopping:
        break
      tick_t = time.monotonic()
      self.next_tick += self.period_s
      inputs, active, reset, taken = self.gather()
      if not active.any():
        continue  # nothing to compute: the idle pool costs nothing
      outputs, step_ms = await loop.run_in_executor(self._executor, self._step, inputs, active, reset)
      self.ticks += 1
      self.step_ms.append(step_ms)
      now = time.monotonic()
      if now > self.next_tick:  # the step overran its unit: count it, do not burst to catch up
        self.deadline_misses += 1
        log.warning("step %d took %.1f ms > %.0f ms period (deadline miss %d)", self.ticks, step_ms,
                    self.period_s * 1e3, self.deadline_misses)
        self.next_tick = now
      self.scatter(outputs, taken, step_ms, tick_t)

  def stop(self) -> None:
    self._stopping = True

  def close(self) -> None:
    self._executor.shutdown(wait=True)
