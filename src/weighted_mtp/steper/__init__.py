"""StepER: step-wise distillation of a teacher's interleaved retrieve-and-reason trajectories
(first-step, mid-step and final-step data) into a student, with per-step uncertainty weighting."""
