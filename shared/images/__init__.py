"""What only image tasks use: readers of folders, MedMNIST ``.npz`` and tables of paths (``readers``), decoding to RGB
at the training size once (``decode``), augmentation in plain torch (``augment``), and the backbone at the training
resolution (``backbone``)."""
