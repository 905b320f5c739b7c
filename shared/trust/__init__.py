"""Whether a model can be trusted beyond its headline number: attributions of its predictions (``explain``), label
issues found by confident learning (``audit``) and k-fold cross-validation around any recipe (``crossval``)."""
