#!/usr/bin/env python
"""From raw clinical notes to structured facts: concepts (NER), their assertion status and the relations between
them, with the folders the three recipes trained (or their ONNX exports), in one command.

    python recipes/pipeline.py --ner_model ner_out --assertion_model assertion_out --relation_model relation_out \\
        --input notes/ --output_dir facts
    python recipes/pipeline.py --ner_model ner_onnx --relation_model relation_onnx --backend onnx \\
        --input notes.jsonl --text_column note --output_format brat --output_dir facts

Steps: 1 arguments -> 2 output folder -> 3 model folders, their entity types checked against each other before any
weights load -> 4 notes -> 5 the chain, a batch of notes at a time -> 6 write. The input is a folder of raw .txt
notes, or a table / JSONL with a text column. Each note goes through the NER model in the windows it was trained
with (long notes are never cut), and every concept it finds reaches the assertion model (concepts of the type it
decides about, "problem" for i2b2) and the relation model (the candidate pairs of a sentence its recipe makes): the
same encoding as each recipe's predict.py. --assertion_model and --relation_model are optional. --type_map renames
NER types the later models know by another name (Disease=problem). Nothing of a note is logged.

Outputs in --output_dir (all hold note text or its words: sensitive): notes.jsonl (one object per note: concepts
with character offsets, type and assertion; relations by concept id), or i2b2 .txt + .con [+ .ast] [+ .rel], or
BRAT .txt + .ann (T lines, the assertion as "A<n> Assertion T<k> <value>", R lines); and predict_results.json
(counts, notes per second).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

from shared.core.args import main_guard, parse_args, setup_logging
from shared.core.errors import DataError
from shared.core.outputs import StagedFolder, check_prediction_dir
from shared.deploy.chain import OUTPUT_FORMATS, Chain, parse_type_map, read_notes, write_facts
from shared.deploy.predictors import BACKENDS, write_prediction_results

logger = logging.getLogger(__name__)
USAGE = ("%(prog)s --ner_model DIR [--assertion_model DIR] [--relation_model DIR] --input NOTES --output_dir DIR "
         "[--output_format jsonl|i2b2|brat] [--backend pytorch|onnx] [options]")


@dataclass
class PipelineArguments:
    _argument_group_name = "pipeline"

    ner_model: str = field(metadata={"help": "The NER recipe's --output_dir (or its export_onnx.py folder)."})
    input: str = field(metadata={"help": "A folder of raw .txt notes, or a table / JSONL with a text column."})
    output_dir: str = field(metadata={"help": "Where the facts go (a new or empty folder)."})
    assertion_model: str | None = field(default=None, metadata={
        "help": "The assertion recipe's --output_dir (or export): each concept of the type it decides about gets "
                "its assertion status."})
    relation_model: str | None = field(default=None, metadata={
        "help": "The relation recipe's --output_dir (or export): the relations between the concepts of a "
                "sentence."})
    output_format: str = field(default="jsonl", metadata={
        "help": "jsonl (notes.jsonl), i2b2 (.txt + .con + .ast + .rel) or brat (.txt + .ann).",
        "choices": list(OUTPUT_FORMATS)})
    backend: str = field(default="pytorch", metadata={
        "help": "'pytorch' runs the trained folders; 'onnx' their export_onnx.py folders (ONNX Runtime).",
        "choices": list(BACKENDS)})
    type_map: str | None = field(default=None, metadata={
        "help": "Rename NER entity types to the names the later models know, NER_TYPE=MODEL_TYPE comma-separated "
                "(Disease=problem,Chemical=treatment)."})
    text_column: str = field(default="text", metadata={"help": "Table / JSONL input: the column holding the note."})
    id_column: str | None = field(default=None, metadata={
        "help": "Table / JSONL input: the column naming each note (default: the row number); it names the output "
                "files."})
    notes_per_batch: int = field(default=32, metadata={
        "help": "Notes run through the chain together (memory grows with it; 1: one note at a time)."})
    batch_size: int = field(default=64, metadata={"help": "Windows / marked sentences per forward pass."})
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime intra-op threads (default: all "
                                                                "cores)."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Replace the output of an earlier pipeline.py run in --output_dir."})

    def __post_init__(self):
        if self.notes_per_batch < 1:
            raise DataError(f"--notes_per_batch must be at least 1, got {self.notes_per_batch}")
        if self.batch_size < 1:
            raise DataError(f"--batch_size must be at least 1, got {self.batch_size}")
        self.types = parse_type_map(self.type_map)


@main_guard
def main(args: list[str] | None = None) -> dict:
    # 1. Arguments: command line > --config.
    (pipeline_args,) = parse_args(PipelineArguments, args=args, description=__doc__, usage=USAGE)
    setup_logging()

    # 2. The output folder, before anything is read: new, empty, or an earlier run's (--overwrite_output_dir).
    check_prediction_dir(pipeline_args.output_dir, pipeline_args.overwrite_output_dir)

    # 3. The model folders: each must hold its task, and the NER types must cover what the others need.
    chain = Chain.from_folders(pipeline_args.ner_model, pipeline_args.assertion_model, pipeline_args.relation_model,
                               pipeline_args.backend, pipeline_args.batch_size, pipeline_args.threads,
                               pipeline_args.types)

    # 4. Notes: read and checked, one line naming file and row on a mistake.
    names, texts = read_notes(pipeline_args.input, pipeline_args.text_column, pipeline_args.id_column)
    logger.info("%d notes; chain: %s", len(texts), " -> ".join(chain.models))

    # 5. The chain, a batch of notes at a time (memory stays that of one batch).
    start, facts = time.perf_counter(), []
    step = pipeline_args.notes_per_batch
    for k in range(0, len(texts), step):
        facts += chain.annotate(texts[k:k + step], names[k:k + step])
    seconds = time.perf_counter() - start

    # 6. Write: the facts and predict_results.json (counts only), all or nothing.
    with StagedFolder(pipeline_args.output_dir) as folder:
        files = write_facts(folder.path, facts, pipeline_args.output_format, chain.asserter is not None,
                            chain.relater is not None)
        concepts = [c for note in facts for c in note.concepts]
        results = {
            "notes": len(facts), "concepts": len(concepts),
            "concept_types": dict(sorted(Counter(c.type for c in concepts).items())),
            **({"assertions": dict(sorted(Counter(c.assertion for c in concepts if c.assertion).items()))}
               if chain.asserter else {}),
            **({"relations": dict(sorted(Counter(t for note in facts for t, _, _ in note.relations).items()))}
               if chain.relater else {}),
            "models": {name: model.model_dir for name, model in chain.models.items()},
            "backend": pipeline_args.backend, "notes_per_batch": step,
            "runtime": round(seconds, 3), "notes_per_second": round(len(facts) / seconds, 3) if seconds else None,
            "output_format": pipeline_args.output_format, "files": len(files),
            "sensitive": "every output file holds note text or its words",
        }
        write_prediction_results(folder.path, results)
    logger.info("%d concepts and %d relations of %d notes written to %s", len(concepts),
                sum(len(n.relations) for n in facts), len(facts), pipeline_args.output_dir)
    return results


if __name__ == "__main__":
    main()
