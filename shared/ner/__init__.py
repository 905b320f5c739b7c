"""What only token tasks use: tag schemes (``tags``), subword alignment and sliding windows (``windows``), entity
metrics (``metrics``), the CRF layer (``crf``), the readers and writers of i2b2 / BRAT / CoNLL / JSON (``i2b2``,
``brat``, ``conll``, ``json_format``, ``textfile``) and the glue that turns any of them into examples (``data``)."""
