"""The documented demo (`python -m launch.demo`): what 2 CPU cores can learn in about an hour of training.

Chosen for the CPU from FLOPs (`python -m launch.describe --config=demo`: 1.0e7 train FLOPs per token
in the first documented run, 1.21e7 with the depth head and 8000 video codes, 1.16e7 now that the
train step computes no logits for video_in, which the loss weighs 0; 6,336 tokens per step;
measured on 2 idle cores for the first run: 1.59 s per step in `launch.bench --what=train_step
--config=configs/demo.py` (MFU 0.21: width 128 is small for the matmul units), 1.86 s per step in
the documented run with its data pipeline, evaluations and checkpoints: 2,500 steps in 78 minutes;
run 3: 1.94 s per step, 81 minutes, beside niced tests; run 4: 1.63 s per step, 68 minutes, alone: the
whole documented run 1 h 41 min; run 5: 3000 steps at 1.36 s per step, 68 minutes, alone: 1 h 43 min
of stages; run 6, as shipped: 3000 steps in 80 minutes with short probes and evaluations beside it),
against
`small` (176 tokens per unit, trained on 8-unit windows of its 64-unit window):
- 32x32 video with a 16x16 stride: 4 video tokens per unit and direction (small: 64), each an
  8000-code FSQ(8,8,5,5,5) cell. With 1000 codes (FSQ(8,5,5,5), the first two documented runs) the
  2x2 grid kept the face and dropped the user's coloured shape (shape colour read back from held-out
  frames: 0.11, chance 0.125; `evaluation/shape_colour.py`); a contrast-weighted loss (the plan's
  `contrast_weight=12`) brought it to 0.65, and 8000 codes with it to 0.83 (PSNR 25.7 -> 26.0 dB).
- the small config's audio codec (16 kHz, 4 x FSQ(8,5,5,5), ~1 kbps): 16 tokens per unit and direction
  (speech intelligibility is where tokens are worth spending).
- 4 text slots: 48 tokens per unit in all. text_in's targets are the user's words as heard
  (`loss.text_in_target="heard"`): in spoken turns the text stream is MISSING and nothing else makes
  the trunk tell which word the user said; weighted 3, their PAD targets 0.1 (run 5: the hearing
  probe's heard bytes 0.64 -> 0.83 over run 4).
- the reply that carries each conversation's first answer weighted 10 (`loss.answer_weight`): every
  text_out target from the user's stop to the reply's end (8.5% of text_out's targets), the answer's
  bytes inside it (run 7). Run 6 weighed the answer's bytes alone (~14 of a batch's 528 text_out
  targets): teacher-forced answers on the validation split rose to colour / arithmetic / repeat 11/14,
  3/10, 13/13 (run 5: 7/14, 1/10, 13/13), but a weight that depends on the target moves the optimum —
  "I do not see any shape." (the answer is the whole reply) became its commonest colour reply.
- every user stop weighted 5 (`loss.stop_weight`, run 8): the text_out targets of the unit the user
  stopped and the 4 after it, whether a pause or a turn's end follows (17% of text_out's targets). Run 7
  weighed the pauses alone (`loss.pause_weight=5`: the user's stop to the end of their resumed speech):
  takeovers in the test split's pauses fell from 0.82 to 0.36 but turns taken from 0.96 to 0.82 — where
  the story's last part looked like the parts before it, holding on was cheaper.
- the model's text aligned with its speech as in the corpus (`text.out_lead_units=0`; a lead of 1
  was measured over 1000 steps and is not what keeps the answers from the user: README "The demo").
- an attention window of 24 units (3.84 s: a question and the start of its answer) plus 1 sink, and
  training windows of sink + window + 8 = 33 units: every window covers the whole attention span used
  when streaming (its last 9 queries see exactly what streaming sees) and its sink is the
  conversation's first unit (`data_pipelines/packing.TokenWindow`).
- video and audio codes embedded as their table row plus one row per FSQ digit
  (`model.code_digit_embed`, `model/code_embedding.py`): of the 8000 video codes most are seen a few
  times in a run; the digits are the codec's latent channels, so the shape's colour reaches the trunk
  through rows every code shares (run 4; runs 1-3 had the table alone: README "The demo").
- 4 layers of width 128 (3.2M parameters with the embeddings, 2.0M of them the 8000-code video table
  and head; 1.4M with 1000 codes), and a 2-layer depth head
  (`model/depth_head.py`, +0.43M parameters, +10% train FLOPs) that draws the next unit's 4 text bytes
  and 16 audio codes one after another: drawn in parallel they were letter salad ("Ithi k" for
  "I think": the first documented run, README "The demo").
"""

from wan_streamer_jax.config import (AudioCodecConfig, Config, LossConfig, ModelConfig, OptimizerConfig,
                                     TextConfig, TrainConfig, VideoCodecConfig, to_config_dict)

WINDOW_UNITS, SINK_UNITS = 24, 1


def get_config():
  return to_config_dict(Config(
      name="demo",
      video=VideoCodecConfig(height=32, width=32, spatial_stride=16, levels=(8, 8, 5, 5, 5), channels=(32, 64)),
      audio=AudioCodecConfig(sample_rate=16000, num_quantizers=4, levels=(8, 5, 5, 5)),
      text=TextConfig(text_slots=4),
      model=ModelConfig(embed_dim=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=384,
                        rope_sections=(16, 8, 8), window_units=WINDOW_UNITS, sink_units=SINK_UNITS,
                        attention_impl="xla", depth_layers=2, code_digit_embed=True),
      # text_in's targets are the user's words as heard (an ASR-like target; the input stays MISSING),
      # weighted up (x3) with their PAD targets (73% of them: no word ended in the unit) weighted down
      # (x0.1), so the heard bytes are not ~3% of the loss (run 5; runs 2-4: weight 1, PAD weight 1)
      # the answer's reply weighs 10x (runs 7-8; run 6: the answer's bytes alone; runs 1-5: 1), every user
      # stop 5x (run 8; run 7: the user's pauses alone 5x, `pause_weight`; runs 1-6: 1)
      loss=LossConfig(text_in=3.0, text_in_target="heard", text_in_pad_weight=0.1, answer_weight=10.0,
                      stop_weight=5.0),
      optimizer=OptimizerConfig(learning_rate=2e-3, warmup_steps=50, decay_steps=3000),
      # own_stream_sampling stays 0: run 9 (0.25, its own predictions as inputs) did not change the
      # validation behaviour (README "Run 9 fed the model its own predictions") and costs one more forward;
      # own_stream_swap stays 0: run 10 (0.25) heard better, its behaviour moved within the runs' spread
      # (validation pauses better, test pauses worse: README "Run 10"); own_history stays 0 here: the demo
      # plan's own_history stage fine-tunes this run on its own rollouts afterwards (run 11,
      # `wan_streamer_jax/demo/plan.py` DOCUMENTED.own_history)
      train=TrainConfig(batch_size=4, units_per_example=SINK_UNITS + WINDOW_UNITS + 8, num_steps=3000,
                        log_every=25, eval_every=500, checkpoint_every=250, checkpoints_to_keep=2),
  ))
