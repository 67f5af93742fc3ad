"""Bad input to the streaming step: a ValueError naming field, expected and received, before any compile;
the state stays usable after a rejected unit."""

import jax
import numpy as np
import pytest

from tests.streaming_fixtures import config, engine, random_inputs, unit
from wan_streamer_jax.codecs.training import create_codec
from wan_streamer_jax.model.transformer import create_model
from wan_streamer_jax.streaming import StreamingEngine, run_stream

ON, OFF = np.ones(1, bool), np.zeros(1, bool)


def _good():
  eng = engine(1)
  return eng, unit(random_inputs(eng, 1, seed=5), 0)


@pytest.mark.parametrize("field,bad,message", [
    ("audio", lambda x: x[:, :-1], r"inputs\['audio'\]: expected shape \(1, 2560\).*160 ms at 16000 Hz.*received \(1, 2559\)"),
    ("audio", lambda x: x.astype(np.float64), r"inputs\['audio'\]: expected dtype float32.*received float64"),
    ("audio", lambda x: np.where(np.arange(x.shape[1]) == 7, np.nan, x).astype(np.float32),
     r"inputs\['audio'\]: expected finite samples.*received 1 NaN/inf \(first at index \(0, 7\)\)"),
    ("video", lambda x: x[:, :, :8], r"inputs\['video'\]: expected shape \(1, 4, 16, 16, 3\).*received \(1, 4, 8, 16, 3\)"),
    ("video", lambda x: x[:, :3], r"inputs\['video'\]: expected shape \(1, 4, 16, 16, 3\).*frames=4.*received \(1, 3, 16, 16, 3\)"),
    ("video", lambda x: x.astype(np.float32), r"inputs\['video'\]: expected dtype uint8.*received float32"),
    ("text", lambda x: x + 300, r"inputs\['text'\]: expected bytes 0..255.*received values in"),
    ("camera_on", lambda x: x.astype(np.int32), r"inputs\['camera_on'\]: expected dtype bool.*received int32"),
    ("audio", lambda x: np.concatenate([x, x]), r"inputs\['audio'\]: expected shape \(1, 2560\) \[slots=1.*received \(2, 2560\)"),
])
def test_bad_inputs_are_rejected_by_name(field, bad, message):
  eng, x = _good()
  with pytest.raises(ValueError, match=message):
    eng.check_inputs({**x, field: bad(x[field])}, ON, OFF)


def test_bad_masks_rates_keys_and_slot_indices():
  eng, x = _good()
  with pytest.raises(ValueError, match=r"active: expected a bool array of shape \(1,\), received int64"):
    eng.check_inputs(x, np.ones(1, np.int64), OFF)
  with pytest.raises(ValueError, match=r"reset: expected shape \(1,\) \(one flag per slot\), received \(2,\)"):
    eng.check_inputs(x, ON, np.zeros(2, bool))
  with pytest.raises(ValueError, match=r"expected sample_rate=16000 Hz, received 24000 Hz"):
    eng.check_inputs(x, ON, OFF, sample_rate=24000)
  with pytest.raises(ValueError, match=r"inputs: expected keys .*missing \['seed'\]"):
    eng.check_inputs({k: v for k, v in x.items() if k != "seed"}, ON, OFF)
  with pytest.raises(ValueError, match=r"slots: expected slot indices in \[0, 1\), received \[1\]"):
    eng.slot_mask([1])
  assert eng.slot_mask([0]).tolist() == [True]
  seq = random_inputs(eng, 3, seed=1)
  with pytest.raises(ValueError, match=r"active: expected shape \(3, 1\)"):
    run_stream(eng, eng.params, eng.init_state(), seq, active_seq=np.ones((2, 1), bool))


def test_state_from_another_config_or_pool_is_rejected():
  eng, x = _good()
  with pytest.raises(ValueError, match="state.*expected shape/dtype"):
    eng.step(eng.params, engine(4).init_state(), x, ON, OFF)
  cfg = config(**{"model.window_units": 2})
  other = StreamingEngine(cfg, create_model(cfg), create_codec(cfg, "audio"), create_codec(cfg, "video"), 1)
  with pytest.raises(ValueError, match=r"state.*cache.*expected shape/dtype"):
    eng.step(eng.params, other.init_state(), x, ON, OFF)
  with pytest.raises(ValueError, match="expected a StreamingState"):
    eng.step(eng.params, {"cache": None}, x, ON, OFF)


def test_engine_construction_checks():
  cfg = config()
  model, audio, video = create_model(cfg), create_codec(cfg, "audio"), create_codec(cfg, "video")
  other = config(**{"audio.num_quantizers": 3})
  with pytest.raises(ValueError, match=r"audio_codec.cfg.num_quantizers: expected the model config's "
                                       r"audio.num_quantizers=2 \(the token format\), received 3"):
    StreamingEngine(cfg, model, create_codec(other, "audio"), video, 1)
  unbounded = config(**{"model.window_units": None})
  with pytest.raises(ValueError, match="max_units: model.window_units is None"):
    StreamingEngine(unbounded, create_model(unbounded), audio, video, 1)
  assert StreamingEngine(unbounded, create_model(unbounded), audio, video, 1, max_units=6).capacity_units == 6
  with pytest.raises(ValueError, match="num_slots: expected an int >= 1, got 0"):
    StreamingEngine(cfg, model, audio, video, 0)
  with pytest.raises(ValueError, match="model: expected a WanStreamer built from cfg"):
    StreamingEngine(cfg, create_model(config(**{"model.num_layers": 1})), audio, video, 1)


def test_state_stays_usable_after_a_rejected_unit():
  eng = engine(1)
  seq = random_inputs(eng, 3, seed=7)
  runs = []
  for reject in (False, True):
    state = eng.init_state(seed=3)
    outs = []
    for t in range(3):
      if reject and t == 1:
        bad = {**unit(seq, t), "audio": np.full_like(seq["audio"][t], np.nan)}
        with pytest.raises(ValueError, match="NaN"):
          eng.step(eng.params, state, bad, ON, OFF)
      state, out = eng.step(eng.params, state, unit(seq, t), ON, OFF)
      outs.append(jax.device_get(out))
    runs.append(outs)
  for a, b in zip(*runs):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert eng.compiled_step._cache_size() == 1
