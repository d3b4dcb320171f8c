"""Recipes: runs that chain several training runs of the one loop (StepER's and CLaRa's demos, the
default CLaRa model's build) and the `wmtp steper` / `wmtp clara` commands that start them. They
sit above training, so the method packages below never import the loop."""
