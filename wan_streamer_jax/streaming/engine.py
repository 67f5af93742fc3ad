"""The streaming engine: one jitted, donated step of a pool of `S` session slots (DESIGN §7).

    engine = StreamingEngine(cfg, model, audio_codec, video_codec, num_slots=S)
    state = engine.init_state(seed=0)
    state, out = engine.step(engine.params, state, inputs, active, reset)   # one 160 ms unit

Per step and slot: the user's 160 ms of audio and 4 frames go through the
codecs' encoders, the codes and the typed text become the unit's `*_in` slots
(`schedule.assemble_units`), the model's own tokens of the previous unit its
`*_out` slots; the model runs that one unit against the slot's ring KV cache
(the training forward's blocks and kernel, `WanStreamer.__call__(cache=...)`);
the logits at the out slots are sampled per stream (`sampling.py`) and decoded
by the codecs' decoders into the model's 160 ms of voice and 4 avatar frames.

Masks (Moshi's exec/reset): `active[s] = False` leaves slot `s` exactly as it
was (bit-identical state, neutral outputs, as if the step never ran; it wins
over `reset`); `reset[s] = True` re-initialises the slot before the unit (a new
conversation: empty cache, zero codec states, unit 0, key from `inputs["seed"]`).

`engine.step_fn` is the same step un-jitted and pure in arrays (parameters are
flat dicts of arrays, the state a registered NamedTuple pytree), for
`jax.lax.scan` (`run.py`) and `jax.export`. The engine's attention is
`impl="xla"` by default: no Pallas custom calls in an exported step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wan_streamer_jax import schedule
from wan_streamer_jax.codecs.audio_codec import AudioCodec
from wan_streamer_jax.codecs.video_codec import VideoCodec
from wan_streamer_jax.config import FRAMES_PER_UNIT, Config, TextConfig
from wan_streamer_jax.model.kv_cache import cache_units, init_cache, reset_rows
from wan_streamer_jax.model.transformer import WanStreamer
from wan_streamer_jax.streaming import checks
from wan_streamer_jax.streaming import state as state_lib
from wan_streamer_jax.streaming.sampling import SamplingConfig, draw_out_groups, seed_keys, split_keys
from wan_streamer_jax.streaming.state import StreamingState, select_rows

TURN_SILENT, TURN_SPEAKING, TURN_YIELDED = 0, 1, 2
_TOKEN_FORMAT = {"audio": ("sample_rate", "num_quantizers", "levels"),
                 "video": ("height", "width", "spatial_stride", "levels")}


def _path_keys(tree) -> tuple:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return tuple("/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
               .removesuffix("/value") for path, _ in leaves)


class StreamingEngine:
  """A pool of `num_slots` streaming sessions over one model and its two codecs (see module docstring)."""

  def __init__(self, cfg: Config, model: WanStreamer, audio_codec: AudioCodec, video_codec: VideoCodec,
               num_slots: int, sampling: SamplingConfig = SamplingConfig(), *, max_units: int | None = None,
               attention_impl: str = "xla"):
    """
    Args:
      cfg: the model's config (its codec sections fix the token format).
      model: a `WanStreamer` (trained or random init).
      audio_codec, video_codec: the codecs (`codecs.training.load_codec` or random init).
      num_slots: S, the pool size (fixed: part of every shape).
      sampling: how out tokens are drawn (static).
      max_units: cache capacity in units; only (and then required) when
        `cfg.model.window_units is None` (see `model/kv_cache.py`).
      attention_impl: the step's attention ("xla": exportable, no custom calls).
    """
    if not isinstance(num_slots, int) or num_slots < 1:
      raise ValueError(f"num_slots: expected an int >= 1, got {num_slots!r}")
    if not isinstance(sampling, SamplingConfig):
      raise ValueError(f"sampling: expected a SamplingConfig, got {type(sampling).__name__}")
    for kind, codec in (("audio", audio_codec), ("video", video_codec)):
      want = getattr(cfg, kind)
      for f in _TOKEN_FORMAT[kind]:
        if getattr(codec.cfg, f) != getattr(want, f):
          raise ValueError(f"{kind}_codec.cfg.{f}: expected the model config's {kind}.{f}="
                           f"{getattr(want, f)!r} (the token format), received {getattr(codec.cfg, f)!r}")
    m = cfg.model
    self.cfg = cfg
    self.layout = schedule.unit_layout(cfg)
    self.num_slots = num_slots
    self.sampling = sampling
    self.capacity_units = cache_units(m.window_units, m.sink_units, max_units)

    ecfg = cfg.replace(model=dict(attention_impl=attention_impl))
    with nnx.use_eager_sharding(False):
      abstract = nnx.eval_shape(lambda: WanStreamer(ecfg, rngs=nnx.Rngs(0)))
    self._graphdef, abstract_params = nnx.split(abstract)
    _, model_params = nnx.split(model)
    if jax.tree.structure(model_params) != jax.tree.structure(abstract_params) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(model_params), jax.tree.leaves(abstract_params))):
      raise ValueError(f"model: expected a WanStreamer built from cfg (name={cfg.name!r}), received one "
                       "whose parameters differ in structure or shape")
    self._model_treedef = jax.tree.structure(model_params)
    self._model_keys = _path_keys(model_params)
    self.audio_fns, audio_params = audio_codec.functional()
    self.video_fns, video_params = video_codec.functional()
    # One device, one sharding for every parameter and every state leaf: parameters restored onto a
    # training mesh (NamedSharding) would otherwise make the step's output state differ in sharding from
    # `init_state()`'s, and the first real unit would recompile the step (measured: 15 s on the demo).
    # (`Array.devices()` is the array's own cached set: never `.pop()` it.)
    self.device = min(jax.tree.leaves(model_params)[0].devices(), key=lambda d: d.id)
    self.params = jax.device_put({"model": dict(zip(self._model_keys, jax.tree.leaves(model_params))),
                                  "audio_codec": self.audio_fns.flat_params(audio_params),
                                  "video_codec": self.video_fns.flat_params(video_params)}, self.device)

    self._input_spec = self._build_input_spec()
    self._input_meaning = self.input_meaning()
    lay = self.layout
    self._out_sizes = [lay.group_size(g) for g in schedule.OUT_GROUPS]
    self._missing_out = np.concatenate([np.full(n, lay.missing(g), np.int32)
                                        for g, n in zip(schedule.OUT_GROUPS, self._out_sizes)])
    self._missing_unit = np.asarray(lay.missing_id, np.int32)
    abstract_state = jax.eval_shape(lambda: self.init_state(0))
    self._state_leaves, self._state_def = jax.tree.flatten(abstract_state)
    self._state_desc = state_lib.describe(abstract_state)
    self.compiled_step = jax.jit(self.step_fn, donate_argnums=(1,), static_argnames=("with_logits",))

  @classmethod
  def from_checkpoints(cls, cfg: Config, model: WanStreamer, audio_workdir: str, video_workdir: str,
                       num_slots: int, sampling: SamplingConfig = SamplingConfig(), **kw) -> "StreamingEngine":
    """The engine over trained codecs: `launch/train_codec.py` run directories (latest step)."""
    from wan_streamer_jax.codecs.training import load_codec
    codecs = {}
    for want, workdir in (("audio", audio_workdir), ("video", video_workdir)):
      codec, kind, _ = load_codec(workdir)
      if kind != want:
        raise ValueError(f"{want}_workdir: expected a {want} codec run, received a {kind} codec at {workdir}")
      codecs[want] = codec
    return cls(cfg, model, codecs["audio"], codecs["video"], num_slots, sampling, **kw)

  # -- specs ------------------------------------------------------------------------------------

  def input_spec(self) -> dict:
    """name -> `jax.ShapeDtypeStruct` of one step's `inputs` dict."""
    return dict(self._input_spec)

  def _build_input_spec(self) -> dict:
    S, a, v, t = self.num_slots, self.cfg.audio, self.cfg.video, self.cfg.text
    sds = jax.ShapeDtypeStruct
    return {"audio": sds((S, a.samples_per_unit), jnp.float32),
            "video": sds((S, FRAMES_PER_UNIT, v.height, v.width, 3), jnp.uint8),
            "camera_on": sds((S,), jnp.bool_),
            "text": sds((S, t.text_slots), jnp.int32),
            "seed": sds((S,), jnp.int32)}

  def input_meaning(self) -> dict:
    S, a, v, t = self.num_slots, self.cfg.audio, self.cfg.video, self.cfg.text
    return {"audio": f"[slots={S}, samples_per_unit={a.samples_per_unit} (160 ms at {a.sample_rate} Hz)]",
            "video": f"[slots={S}, frames={FRAMES_PER_UNIT} (160 ms at 25 fps), height={v.height}, "
                     f"width={v.width}, 3]",
            "camera_on": f"[slots={S}]", "text": f"[slots={S}, text_slots={t.text_slots}]",
            "seed": f"[slots={S}] (the PRNG seed of a slot's new conversation, used where reset)"}

  def output_spec(self, with_logits: bool = False) -> dict:
    """name -> `jax.ShapeDtypeStruct` of one step's outputs."""
    shapes = jax.eval_shape(lambda s: self.step_fn(self.params, s, self.silent_inputs(), *self._masks(),
                                                   with_logits=with_logits)[1],
                            jax.eval_shape(lambda: self.init_state(0)))
    return dict(shapes)

  def manifest(self) -> dict:
    """JSON-able description of the step (for an export manifest / a server that never imports
    the model): config, pool, stream formats, unit layout, input and output specs."""
    import dataclasses
    a, v, t = self.cfg.audio, self.cfg.video, self.cfg.text
    spec = lambda d: {k: {"shape": list(x.shape), "dtype": np.dtype(x.dtype).name} for k, x in d.items()}
    return {"config": self.cfg.to_dict(), "num_slots": self.num_slots, "sample_rate": a.sample_rate,
            "samples_per_unit": a.samples_per_unit, "frames_per_unit": FRAMES_PER_UNIT, "fps": 25,
            "height": v.height, "width": v.width, "text_slots": t.text_slots, "unit_seconds": 0.16,
            "tokens_per_unit": self.layout.tokens_per_unit, "unit_layout": self.layout.describe(),
            "cache_units": self.capacity_units, "window_units": self.cfg.model.window_units,
            "sink_units": self.cfg.model.sink_units, "sampling": dataclasses.asdict(self.sampling),
            "text_specials": {"PAD": t.PAD, "WORD_END": t.WORD_END, "END_OF_TURN": t.END_OF_TURN,
                              "MISSING": t.MISSING},
            "turn_states": {"silent": TURN_SILENT, "speaking": TURN_SPEAKING, "yielded": TURN_YIELDED},
            "inputs": spec(self.input_spec()), "masks": {"active": {"shape": [self.num_slots], "dtype": "bool"},
                                                         "reset": {"shape": [self.num_slots], "dtype": "bool"}},
            "outputs": spec(self.output_spec())}

  def silent_inputs(self) -> dict:
    """Neutral inputs (silence, black frames with the camera off, nothing typed): numpy."""
    return {k: (np.full(s.shape, TextConfig.PAD, s.dtype) if k == "text" else np.zeros(s.shape, s.dtype))
            for k, s in self.input_spec().items()}

  def _masks(self):
    return np.ones(self.num_slots, bool), np.zeros(self.num_slots, bool)

  # -- state ------------------------------------------------------------------------------------

  def init_state(self, seed: int = 0) -> StreamingState:
    """Every slot at the start of a conversation; slot `s`'s key is `fold_in(PRNGKey(seed), s)`."""
    S, m = self.num_slots, self.cfg.model
    cache = init_cache(layers=m.num_layers, batch=S, units=self.capacity_units,
                       tokens_per_unit=self.layout.tokens_per_unit, kv_heads=m.num_kv_heads,
                       head_dim=m.head_dim, dtype=jnp.dtype(m.compute_dtype))
    base = jax.random.PRNGKey(seed)
    rng = jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(S))
    return jax.device_put(StreamingState(
        cache=cache, audio=self.audio_fns.init_state(S), video=self.video_fns.init_state(S),
        unit=jnp.zeros((S,), jnp.int32), rng=rng,
        prev_out=jnp.broadcast_to(jnp.asarray(self._missing_out), (S, self._missing_out.size)),
        in_turn=jnp.zeros((S,), jnp.bool_)), self.device)

  def check_state(self, state) -> None:
    leaves, treedef = jax.tree.flatten(state)
    if isinstance(state, StreamingState) and treedef == self._state_def and all(
        tuple(x.shape) == tuple(s.shape) and x.dtype == s.dtype for x, s in zip(leaves, self._state_leaves)):
      return
    state_lib.check_state(state, self._state_desc)
    raise ValueError("state: expected a StreamingState of this engine (same config and slot count)")

  def check_inputs(self, inputs: dict, active, reset, *, lead: tuple = (), sample_rate: int | None = None):
    """ValueError naming the field, the expected and the received value (host side, nothing compiled)."""
    checks.check_inputs(self._input_spec, self._input_meaning, inputs, active, reset, lead=lead,
                        sample_rate=sample_rate, expected_rate=self.cfg.audio.sample_rate)

  def slot_mask(self, indices) -> np.ndarray:
    """Slot indices -> bool `[S]` (for `active` / `reset`); ValueError for an index out of range."""
    return checks.slot_mask(indices, self.num_slots)

  # -- the step ---------------------------------------------------------------------------------

  def step(self, params: dict, state: StreamingState, inputs: dict, active, reset, *,
           sample_rate: int | None = None):
    """Validated, jitted, state-donating step: `(state, outputs)` (rebind the state)."""
    active, reset = np.asarray(active), np.asarray(reset)
    self.check_inputs(inputs, active, reset, sample_rate=sample_rate)
    self.check_state(state)
    return self.compiled_step(params, state, inputs, active, reset)

  def model(self, params: dict | None = None) -> WanStreamer:
    """The engine's `WanStreamer` over `params` (default the engine's own `self.params`)."""
    return self._model((self.params if params is None else params)["model"])

  def _model(self, flat: dict) -> WanStreamer:
    return nnx.merge(self._graphdef, jax.tree.unflatten(self._model_treedef, [flat[k] for k in self._model_keys]))

  def step_fn(self, params: dict, state: StreamingState, inputs: dict, active, reset, forced_out=None,
              with_logits: bool = False):
    """The pure step (see the module docstring). Shapes: `input_spec()`, `output_spec()`.

    `forced_out` (int32 `[S, n_out]`, optional): the model's out tokens of this unit taken from a
    recording instead of its samples (teacher forcing, `run.run_teacher_forced`).
    """
    lay, S, L = self.layout, self.num_slots, self.layout.tokens_per_unit
    active, reset = jnp.asarray(active, jnp.bool_), jnp.asarray(reset, jnp.bool_)
    fresh = reset & active
    # a new conversation where reset: empty cache (ids only), zero codec states, unit 0, its own key
    cache = reset_rows(state.cache, fresh)
    audio_state = select_rows(fresh, self.audio_fns.init_state(S), state.audio)
    video_state = select_rows(fresh, self.video_fns.init_state(S), state.video)
    unit = jnp.where(fresh, 0, state.unit)
    rng = jnp.where(fresh[:, None], seed_keys(inputs["seed"]), state.rng)
    prev_out = jnp.where(fresh[:, None], jnp.asarray(self._missing_out)[None], state.prev_out)
    in_turn = state.in_turn & ~fresh

    # user side -> the unit's in slots; the model's previous unit -> its out slots
    audio_state, audio_codes = self.audio_fns.encode_step(params["audio_codec"], audio_state,
                                                          jnp.clip(inputs["audio"], -1.0, 1.0))
    video_state, video_codes = self.video_fns.encode_step(params["video_codec"], video_state, inputs["video"])
    video_in = schedule.codes_to_slots(lay, "video_in", video_codes)
    streams = {"video_in": jnp.where(inputs["camera_on"][:, None, None], video_in, lay.missing("video_in")),
               "audio_in": schedule.codes_to_slots(lay, "audio_in", audio_codes),
               "text_in": inputs["text"][:, None]}
    splits = np.cumsum(self._out_sizes)[:-1]
    for g, part in zip(schedule.OUT_GROUPS, jnp.split(prev_out, splits, axis=1)):
      streams[g] = part[:, None]
    tokens = schedule.assemble_units(lay, streams)  # [S, L]

    segment = jnp.broadcast_to(active.astype(jnp.int32)[:, None], (S, L))  # 0: inactive, no cache write
    model = self._model(params["model"])
    # only the out groups' heads unless the caller reads the logits (the in groups' are never drawn)
    groups = None if with_logits else schedule.OUT_GROUPS
    logits, cache, hidden = model(tokens, segment, jnp.broadcast_to(unit[:, None], (S, L)), cache=cache,
                                  return_hidden=True, groups=groups)

    rng_next, keys = split_keys(rng, len(schedule.OUT_GROUPS))
    keys = dict(zip(schedule.OUT_GROUPS, keys))
    forced = None if forced_out is None else dict(zip(schedule.OUT_GROUPS,
                                                      jnp.split(forced_out.astype(jnp.int32), splits, axis=1)))
    # text_out, audio_out slot by slot through the depth head (forced ones fed back as recorded)
    sampled, logits = draw_out_groups(model, lay, logits, hidden, keys, self.sampling, forced, groups)
    next_tokens = jnp.concatenate([sampled[g] for g in schedule.OUT_GROUPS], axis=1)  # [S, n_out]
    out_stream = next_tokens if forced_out is None else forced_out.astype(jnp.int32)
    emitted = dict(zip(schedule.OUT_GROUPS, jnp.split(out_stream, splits, axis=1)))

    # the model's side of this unit -> voice, avatar frames, text, turn state
    audio_state, voice = self.audio_fns.decode_step(
        params["audio_codec"], audio_state, schedule.slots_to_codes(lay, "audio_out", emitted["audio_out"][:, None]))
    video_state, frames = self.video_fns.decode_step(
        params["video_codec"], video_state, schedule.slots_to_codes(lay, "video_out", emitted["video_out"][:, None]))
    text = emitted["text_out"]
    eot = jnp.any(text == TextConfig.END_OF_TURN, axis=1)
    spoke = jnp.any((text < 256) | (text == TextConfig.WORD_END), axis=1)
    in_turn = jnp.where(eot, False, in_turn | spoke)
    turn = jnp.where(eot, TURN_YIELDED, jnp.where(in_turn, TURN_SPEAKING, TURN_SILENT)).astype(jnp.int32)

    new = StreamingState(cache=cache,
                         audio=select_rows(active, audio_state, state.audio),
                         video=select_rows(active, video_state, state.video),
                         unit=jnp.where(active, unit + 1, state.unit),
                         rng=jnp.where(active[:, None], rng_next, state.rng),
                         prev_out=jnp.where(active[:, None], out_stream, state.prev_out),
                         in_turn=jnp.where(active, in_turn, state.in_turn))
    on = lambda x, off: jnp.where(active.reshape((S,) + (1,) * (x.ndim - 1)), x, off)
    outputs = {"audio": on(voice, 0.0), "video": on(frames, jnp.uint8(0)),
               "text": on(text, TextConfig.PAD), "turn_state": on(turn, TURN_SILENT),
               "unit": on(unit, -1), "tokens": on(tokens, jnp.asarray(self._missing_unit)[None]),
               "next_tokens": on(next_tokens, jnp.asarray(self._missing_out)[None])}
    if with_logits:
      outputs["logits"] = logits
    return new, outputs
