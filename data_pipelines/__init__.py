"""Synthetic corpus, TFDS builders and Grain pipelines (DESIGN §6).

Corpus (one conversation = `corpus.generate_conversation(spec, split, index)`):
  speech.py, espeak_worker.py  eSpeak NG speech + word timings, bit-reproducible
  timeline.py, dialogues.py    turn placement on the 160 ms clock; the tasks
  render.py, scenes.py, avatar.py   user camera and model avatar at 25 fps
  text_slots.py                text bytes per unit (PAD / WORD_END / END_OF_TURN / MISSING)
  corpus.py                    the assembled example (shapes in its docstring)
Storage: synthetic_builder.py (the corpus), folder_builder.py (your recordings), media_io.py
Pipelines: pipelines.py (raw and token heads), packing.py, token_data.py (token example contract)
Inspection: contact_sheet.py (PNG sheet, audio statistics, lip-sync correlation)
"""
