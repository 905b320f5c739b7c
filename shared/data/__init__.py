"""Tables and what is read from them, for any task: tables in every format and Hub datasets (``tables``), label
columns and decisions (``labels``), validation / test splits and folds carved by patient (``splits``), and notes longer
than a model's window (``long_text``)."""
