"""Models and how they are trained: loading and heads (``models``), LoRA (``lora``), optimisers and layer-wise
learning rates (``optim``), class imbalance (``imbalance``), defaults derived from the training data and the best
epoch (``adaptive``), and the tiny models the tests and the demo build from config (``tiny_models``)."""
