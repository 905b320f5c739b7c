"""The clinical note formats several tasks read and write (NER, assertion status, relations): text files
(``textfile``), i2b2 2010 ``.txt`` + ``.con`` (``i2b2``), BRAT standoff (``brat``), CoNLL (``conll``), JSON lines
(``json_format``), which of them a path holds (``detect``), and the token tags their spans become (``tags``)."""
