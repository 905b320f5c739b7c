"""What only the text classification task uses: reading a table's text columns and encoding notes into windows, the
one path of ``recipes/text_classification/train.py`` and of its predictor
(``shared.deploy.predictors.TextClassifier``)."""
