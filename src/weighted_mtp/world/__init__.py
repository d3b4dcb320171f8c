"""The synthetic multi-hop world that StepER and CLaRa share: invented entities, one document per
fact, questions with known gold chains, the reasoning text format and a teacher that reasons over
the gold chain. It sits below models (the world student's tokenizer is trained on its text) and
below both method packages, so neither imports the other for it."""
