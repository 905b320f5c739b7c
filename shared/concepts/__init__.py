"""Tasks on concepts already found in a note: assertion status of a concept and relations between two (i2b2 2010
``.ast`` / ``.rel`` files, BRAT ``R`` lines), with entity markers around the concepts in their sentence."""
