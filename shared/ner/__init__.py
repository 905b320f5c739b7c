"""What only the NER task uses: subword alignment and sliding windows (``windows``), entity metrics (``metrics``),
the CRF layer (``crf``) and the glue that turns any note format (``shared.formats``) into word-level examples and
predictions back into the input's own format (``data``)."""
