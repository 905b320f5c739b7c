"""Turn each supported input into word-level examples, and predictions back into the input's own format.

The glue over the readers in this package: every format becomes an :class:`NerSplit` (words, IOB2 tags, where each
example came from, which document it belongs to) plus a function that writes predicted tags back as ``.con`` /
``.ann`` / CoNLL / JSON lines files, so official scorers can read them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.data.tables import hub_split, load_hub_dataset
from shared.formats.brat import OVERLAPPING_ENTITIES, OverlapError, read_brat, write_brat
from shared.formats.conll import read_conll, write_conll
from shared.formats.detect import detect_format
from shared.formats.i2b2 import read_i2b2, write_i2b2
from shared.formats.json_format import read_ner_json, write_ner_json

logger = logging.getLogger(__name__)

NER_FORMATS = ("auto", "i2b2", "brat", "conll", "json")
# what --overlapping_entities changed, as the log line names it
ENTITY_CHANGES = {
    "covering_range": "discontinuous entities read as the range from their first to their last character",
    "first_fragment": "discontinuous entities cut to their first fragment",
    "dropped_discontinuous": "discontinuous entities dropped",
    "dropped_overlapping": "entities dropped for overlapping an earlier one",
}


@dataclass
class NerSplit:
    source: str
    format: str
    words: list[list[str]]
    tags: list[list[str]] | None  # None when the input carries no labels (prediction only)
    where: list[tuple[str, int | None]]  # (file, line) of every example, for error messages
    groups: list[str]  # document of every example: bootstrap resamples whole documents
    # (predicted IOB2 tags per example, folder) -> files written
    write_predictions: Callable[[list[list[str]], str], list[str]] = field(repr=False, default=None)
    # entities of i2b2 / BRAT input that flat tags cannot hold, by what --overlapping_entities did (ENTITY_CHANGES)
    entity_changes: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.words)

    def select(self, indices) -> "NerSplit":
        """The examples at ``indices`` (a validation split or cross-validation fold cut out of this one).

        A subset is no longer a whole input file, so its predictions are written as JSON lines: the file and line
        each example came from, its words and the predicted tags.
        """
        words, where = [self.words[i] for i in indices], [self.where[i] for i in indices]

        def write(pred, out_dir):
            import json


            out = os.path.join(out_dir, "predictions.jsonl")
            atomic_write_text(out, "".join(json.dumps({"file": f, "line": line, "tokens": w, "ner_tags": p},
                                                      ensure_ascii=False) + "\n"
                                           for (f, line), w, p in zip(where, words, pred)))
            return [out]

        tags = None if self.tags is None else [self.tags[i] for i in indices]
        return NerSplit(self.source, self.format, words, tags, where, [self.groups[i] for i in indices], write)


def load_split(path: str, fmt: str, limit: int | None = None, tokens_column: str = "tokens",
               tags_column: str = "ner_tags", tag_column: int = -1, require_tags: bool = True,
               group_column: str | None = None, notes_format: str | None = None,
               overlapping_entities: str = "error") -> NerSplit:
    """Read one split. ``limit`` keeps the first examples (whole documents for i2b2/BRAT, so that prediction files
    stay complete). ``require_tags=False`` accepts unlabelled input (``tags`` is then None). ``groups`` are the
    documents (i2b2/BRAT files, CoNLL ``-DOCSTART-``), or for JSON the ``group_column`` field of each record.
    ``overlapping_entities`` (``OVERLAPPING_ENTITIES``) says what i2b2 / BRAT entities that flat tags cannot hold
    become; what it changed is counted in ``entity_changes`` and logged (counts only)."""
    if overlapping_entities not in OVERLAPPING_ENTITIES:
        raise DataError(f"unknown --overlapping_entities '{overlapping_entities}' (choose from "
                        f"{', '.join(OVERLAPPING_ENTITIES)})")
    fmt = detect_format(path, notes_format) if fmt == "auto" else fmt
    if group_column and fmt != "json":
        raise DataError(f"--group_column names a field of JSON records; {fmt} examples are grouped by document "
                        "automatically", path)
    if fmt in ("i2b2", "brat"):
        try:
            split = (_i2b2 if fmt == "i2b2" else _brat)(path, limit, require_tags, overlapping_entities)
        except OverlapError as error:  # the format layer knows no options: name the one that reads such input
            raise DataError(f"{error.reason} (flat tags hold one entity per word; --overlapping_entities "
                            "first_fragment or drop reads such entities)", error.path, error.line) from None
        if split.entity_changes:
            logger.warning("%s: %s (--overlapping_entities %s)", path, ", ".join(
                f"{n} {ENTITY_CHANGES[what]}" for what, n in split.entity_changes.items()), overlapping_entities)
        return split
    if fmt == "conll":
        return _conll(path, limit, tag_column, require_tags)
    if fmt == "json":
        return _json(path, limit, tokens_column, tags_column, require_tags, group_column)
    raise DataError(f"unknown --data_format '{fmt}' (choose from {', '.join(NER_FORMATS)})")


def _keep_docs(per_doc_counts: list[int], limit: int | None) -> int:
    """How many documents to keep so that at least ``limit`` examples are kept."""
    if limit is None:
        return len(per_doc_counts)
    total = 0
    for i, n in enumerate(per_doc_counts):
        total += n
        if total >= limit:
            return i + 1
    return len(per_doc_counts)


def _unlabelled(source, labelled_flags, require_tags):
    if all(labelled_flags):
        return False
    if require_tags:
        raise DataError("has no annotations (.con/.ann files) but this split needs labels", source)
    return True


def _i2b2(path, limit, require_tags, overlapping) -> NerSplit:
    # i2b2 concepts are contiguous: both rules other than 'error' leave out the later of two overlapping concepts
    notes = read_i2b2(path, allow_overlaps=overlapping != "error")
    notes = notes[: _keep_docs([sum(1 for line in n.lines if line) for n in notes], limit)]
    unlabelled = _unlabelled(path, [n.labelled for n in notes], require_tags)
    words, tags, where, groups = [], [], [], []
    dropped = 0
    for note in notes:
        note_tags, n = note.tag_lines(drop_overlapping=overlapping != "error")
        dropped += n
        for k, toks in enumerate(note.lines):
            if toks:  # empty lines carry nothing to predict; written back as nothing
                words.append(toks)
                tags.append(note_tags[k])
                where.append((note.con_path or note.txt_path, k + 1))
                groups.append(note.doc_id)

    def write(pred, out_dir):
        it = iter(pred)
        per_note = [[next(it) if toks else [] for toks in note.lines] for note in notes]
        write_i2b2(notes, out_dir, tags=per_note, write_txt=False)
        return [os.path.join(out_dir, n.doc_id + ".con") for n in notes]

    return NerSplit(path, "i2b2", words, None if unlabelled else tags, where, groups, write,
                    {"dropped_overlapping": dropped} if dropped else {})


def _brat(path, limit, require_tags, overlapping) -> NerSplit:
    # overlaps are left to tag_sentences, which applies the rule; discontinuous entities are counted per split
    docs = read_brat(path, allow_overlaps=overlapping != "error", warn_discontinuous=False)
    sentences = [d.sentences() for d in docs]
    keep = _keep_docs([len(s) for s in sentences], limit)
    docs, sentences = docs[:keep], sentences[:keep]
    unlabelled = _unlabelled(path, [d.labelled for d in docs], require_tags)
    words, tags, where, groups = [], [], [], []
    changes: Counter = Counter()
    for doc, sents in zip(docs, sentences):
        doc_tags, changed = doc.tag_sentences(overlapping)
        changes += changed
        for s, st in zip(sents, doc_tags):
            words.append([w for w, _, _ in s])
            tags.append(st)
            # the line of the note this sentence is on (BRAT errors point at .ann lines; tag errors at the .txt)
            where.append((doc.txt_path, doc.text.count("\n", 0, s[0][1]) + 1))
            groups.append(doc.doc_id)

    def write(pred, out_dir):
        it = iter(pred)
        per_doc = [[next(it) for _ in sents] for sents in sentences]
        write_brat(docs, out_dir, tags=per_doc, write_txt=False)
        return [os.path.join(out_dir, d.doc_id + ".ann") for d in docs]

    return NerSplit(path, "brat", words, None if unlabelled else tags, where, groups, write,
                    {what: changes[what] for what in ENTITY_CHANGES if changes[what]})


def _conll(path, limit, tag_column, require_tags) -> NerSplit:
    data = read_conll(path, tag_column=tag_column, require_tags=require_tags)
    if not data.sentences:
        raise DataError("no sentences found", path)
    has_tags = data.n_columns > 1
    if limit is not None and limit < len(data.sentences):
        # Keep the file up to the last kept sentence, so the prediction file is a well-formed prefix of the input.
        last_line = data.sentences[limit - 1].line_indices[-1]
        data.sentences = data.sentences[:limit]
        data.lines = data.lines[: last_line + 1]
        data.trailing_newline = True
    sents = data.sentences

    def write(pred, out_dir):
        out = os.path.join(out_dir, os.path.basename(path))
        write_conll(data, out, tags=pred)
        return [out]

    return NerSplit(path, "conll", [s.tokens for s in sents], [s.tags for s in sents] if has_tags else None,
                    [(path, s.first_line) for s in sents], [f"doc{s.doc_index}" for s in sents], write)


def _json(path, limit, tokens_column, tags_column, require_tags, group_column=None) -> NerSplit:
    data, words, tags = read_ner_json(path, tokens_column, tags_column, require_tags=require_tags)
    if limit is not None:
        data.records, data.lines = data.records[:limit], data.lines[:limit]
        words, tags = words[:limit], tags[:limit]
    has_tags = bool(data.records) and all(tags_column in r for r in data.records)
    where = [(path, line) for line in data.lines]
    groups = [str(i) for i in range(len(words))]
    if group_column:
        for i, (record, line) in enumerate(zip(data.records, data.lines)):
            value = record.get(group_column)
            if value is None or str(value).strip() == "":
                name = "record" if line is not None else f"record {i}"
                raise DataError(f"{name} has no '{group_column}' field (--group_column)", path, line)
        groups = [str(r[group_column]).strip() for r in data.records]

    def write(pred, out_dir):
        name = os.path.splitext(os.path.basename(path))[0] + ".jsonl"
        out = os.path.join(out_dir, name)
        write_ner_json(data, out, pred)
        return [out]

    return NerSplit(path, "json", words, tags if has_tags else None, where, groups, write)


def load_hub_split(dataset, split_name: str, tokens_column: str, tags_column: str, limit: int | None) -> NerSplit:
    """A split of a ``datasets`` dataset (hub or ``load_from_disk``); ClassLabel ids become their names."""
    import json


    ds = dataset[split_name]
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    for col in (tokens_column,):
        if col not in ds.column_names:
            raise DataError(f"split '{split_name}' has no column '{col}' (set --tokens_column)")
    feature = ds.features.get(tags_column)
    names = getattr(getattr(feature, "feature", None), "names", None)
    words = [list(t) for t in ds[tokens_column]]
    tags = None
    if tags_column in ds.column_names:
        tags = [[names[t] if names else str(t) for t in row] for row in ds[tags_column]]
    where = [(f"{split_name}[{i}]", None) for i in range(len(ds))]

    def write(pred, out_dir):
        out = os.path.join(out_dir, f"{split_name}_predictions.jsonl")
        atomic_write_text(out, "".join(json.dumps({tokens_column: w, tags_column: p}, ensure_ascii=False) + "\n"
                                       for w, p in zip(words, pred)))
        return [out]

    return NerSplit(split_name, "hub", words, tags, where, [str(i) for i in range(len(ds))], write)


def load_ner_splits(data_args, wanted, limits: dict[str, int | None]) -> dict[str, NerSplit]:
    """Read every split in ``wanted`` that has a file (``--train_file`` ...) or a split of ``--dataset_name``; the
    test split may be unlabelled. ``limits`` keeps the first examples of a split (whole documents)."""
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    hub = None
    if data_args.dataset_name and any(not files[split] for split in wanted):
        hub = load_hub_dataset(data_args.dataset_name, data_args.dataset_config_name)
    splits = {}
    for split in wanted:
        if files[split]:
            splits[split] = load_split(files[split], data_args.data_format, limits.get(split), data_args.tokens_column,
                                       data_args.tags_column, data_args.conll_tag_column, require_tags=split != "test",
                                       group_column=data_args.group_column if split == "train" else None,
                                       overlapping_entities=data_args.overlapping_entities)
        elif hub is not None and hub_split(hub, split) is not None:
            if split == "train" and data_args.group_column:
                raise DataError("--group_column works with JSON training files (hub examples are not grouped)")
            splits[split] = load_hub_split(hub, hub_split(hub, split), data_args.tokens_column,
                                           data_args.tags_column, limits.get(split))
        else:
            continue
        if not len(splits[split]):
            raise DataError(f"{split} split has no examples", splits[split].source)
    return splits


def carve_groups(train: NerSplit, group_column: str | None):
    """The groups that carved splits keep whole: documents, or ``--group_column`` of JSON records; None when every
    example is its own document or all are one (CoNLL without ``-DOCSTART-``): nothing to keep together."""
    documents = len(set(train.groups))
    return train.groups if group_column or 1 < documents < len(train) else None
