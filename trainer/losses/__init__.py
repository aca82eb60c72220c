"""Training losses, one per module, each readable top to bottom (import from the module itself).

- `trainer.losses.uld`: Universal Logit Distillation across tokenizers (live or cached top-k
  teacher), the CE + lambda * ULD total, and forward KL / JSD for a teacher with the same tokenizer.
- `trainer.losses.answer_ce`: the next-token loss on the labelled positions only (SFT): the model's
  own loss, with the output layer run on the answer tokens alone.
"""
