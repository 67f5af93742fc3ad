"""The corpus contact sheet: a readable header (answer or none) and a legend of every mark it draws."""

from data_pipelines import contact_sheet
from data_pipelines.corpus import CorpusSpec, generate_conversation
from wan_streamer_jax.config import Config

SPEC = CorpusSpec.from_config(Config())


def test_header_states_the_answer_or_its_absence_and_explains_the_marks():
  seen = set()
  for i in range(8):
    ex = generate_conversation(SPEC, "test", i)
    lines = [line for line, _ in contact_sheet.sheet_header(ex, 16)]
    first = lines[0]
    assert "''" not in first and "@unit" not in first and "-1" not in first
    if ex["expected_answer"]:
      assert f'first answer "{ex["expected_answer"]}" spoken from unit {int(ex["answer_unit"])}' in first
      seen.add("answer")
    else:
      assert "no expected answer" in first
      seen.add("none")
    legend = " ".join(lines[-len(contact_sheet.LEGEND):])
    for mark in ("????????", ". = PAD", "? = MISSING", "_ = WORD_END", "| = END_OF_TURN", "green = user",
                 "blue = model", "camera off"):
      assert mark in legend, mark
  assert seen == {"answer", "none"}


def test_sheet_renders_header_and_units():
  ex = generate_conversation(SPEC, "test", 3)
  img = contact_sheet.contact_sheet(ex, units_per_row=16, max_units=32)
  header_h = 14 * len(contact_sheet.sheet_header(ex, 32)) + contact_sheet.PAD
  assert img.size[0] == contact_sheet.PAD + 16 * (contact_sheet.CELL + contact_sheet.PAD)
  assert img.size[1] > header_h + 2 * contact_sheet.CELL * 2
