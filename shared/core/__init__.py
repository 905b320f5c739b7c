"""The bottom layer: what every recipe and tool stands on, knowing no task. Errors that end a run in one line
(``errors``), files written atomically (``files``), arguments and YAML/JSON configs (``args``), output folders
(``outputs``), resuming (``resume``), processes (``distributed``) and running a recipe by name (``runner``)."""
