"""Regenerate the synthetic notes with relations in ../sample_data (deterministic; no real patient text).

Each note is a few sentences built from templates with invented problems, tests and treatments; the template sets
the relation of each pair of its concepts, with the i2b2 2010 types (TrAP: treatment administered for problem, TrIP
improves, TrWP worsens, TrCP causes, TrNAP not administered because of; TeRP: test reveals problem, TeCP conducted
to investigate it; PIP: problem indicates problem), and most pairs have none (templates without relations are drawn three times as often), as in real notes. The same notes are
written twice: ``i2b2/{train,validation,test}/note_NN.{txt,con,rel}`` and ``brat/{split}/note_NN.{txt,ann}`` (T lines
typed problem / test / treatment, R lines with the same types, Arg1 the treatment or test).
Run: ``python recipes/relation_extraction/sample_data/make_sample_data.py``.
"""

import os
import random

PROBLEMS = ["chest pain", "shortness of breath", "fever", "cough", "hypertension", "pneumonia", "abdominal pain",
            "nausea", "headache", "anemia", "syncope", "rash", "back pain", "diabetes", "edema", "hypokalemia"]
TESTS = ["chest x-ray", "ecg", "cbc", "troponin", "urinalysis", "echocardiogram", "ct scan", "potassium level"]
TREATMENTS = ["aspirin", "metoprolol", "lisinopril", "insulin", "ceftriaxone", "furosemide", "heparin", "oxygen"]
# (template, relations between its concepts: (index of the first, type, index of the second), in template order)
TEMPLATES = [
    ("He was started on {R} for {P} .", [(0, "TrAP", 1)]),
    ("She received {R} for her {P} and {P} .", [(0, "TrAP", 1), (0, "TrAP", 2)]),
    ("Her {P} improved on {R} .", [(1, "TrIP", 0)]),
    ("The {P} resolved after {R} was given .", [(1, "TrIP", 0)]),
    ("His {P} worsened despite {R} .", [(1, "TrWP", 0)]),
    ("She developed {P} after starting {R} .", [(1, "TrCP", 0)]),
    ("{R} was held because of {P} .", [(0, "TrNAP", 1)]),
    ("The {T} showed {P} .", [(0, "TeRP", 1)]),
    ("A {T} was ordered to evaluate the {P} .", [(0, "TeCP", 1)]),
    ("The {P} is likely due to {P} .", [(1, "PIP", 0)]),
    ("She has {P} and takes {R} at home .", []),
    ("The {T} was normal and the {P} is stable .", []),
    ("Denies {P} or {P} today .", []),
    ("Continue {R} and repeat the {T} tomorrow .", []),
    ("History of {P} ; {R} was stopped last year .", []),
    ("He was given {R} for {P} ; the {T} showed {P} .", [(0, "TrAP", 1), (2, "TeRP", 3)]),
]
TYPES = {"P": ("problem", PROBLEMS), "T": ("test", TESTS), "R": ("treatment", TREATMENTS)}
SPLITS = {"train": 60, "validation": 12, "test": 12}


def sentence(rng, template):
    tokens, concepts = [], []
    for piece in template.split(" "):
        if piece.startswith("{") and piece.endswith("}"):
            ctype, pool = TYPES[piece[1]]
            words = rng.choice(pool).split(" ")
            if not tokens:
                words = [words[0].capitalize()] + words[1:]
            concepts.append((len(tokens), len(tokens) + len(words) - 1, ctype))
            tokens += words
        else:
            tokens.append(piece)
    return tokens, concepts


def write(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in lines))


def write_note(root, split, name, rng, n_lines):
    lines, con, rel, ann, relations = [], [], [], [], []
    offset = 0
    for k in range(1, n_lines + 1):
        template, links = rng.choices(TEMPLATES, [1 if links else 3 for _, links in TEMPLATES])[0]
        tokens, concepts = sentence(rng, template)
        starts = [sum(len(t) + 1 for t in tokens[:i]) for i in range(len(tokens))]
        spans, ids = [], []
        for start, end, ctype in concepts:
            text = " ".join(tokens[start:end + 1])
            spans.append(f'c="{text.lower()}" {k}:{start} {k}:{end}')
            con.append(f'{spans[-1]}||t="{ctype}"')
            ids.append(f"T{len(ann) + 1}")
            first = offset + starts[start]
            ann.append(f"{ids[-1]}\t{ctype} {first} {first + len(text)}\t{text}")
        for a, rtype, b in links:
            rel.append(f'{spans[a]}||r="{rtype}"||{spans[b]}')
            relations.append(f"R{len(relations) + 1}\t{rtype} Arg1:{ids[a]} Arg2:{ids[b]}")
        lines.append(" ".join(tokens))
        offset += len(lines[-1]) + 1
    i2b2, brat = (os.path.join(root, fmt, split) for fmt in ("i2b2", "brat"))
    for folder in (i2b2, brat):
        os.makedirs(folder, exist_ok=True)
        write(os.path.join(folder, name + ".txt"), lines)
    write(os.path.join(i2b2, name + ".con"), con)
    write(os.path.join(i2b2, name + ".rel"), rel)
    write(os.path.join(brat, name + ".ann"), ann + relations)


def main():
    root = os.path.dirname(os.path.abspath(__file__))
    rng = random.Random(2013)
    for split, n in SPLITS.items():
        for i in range(n):
            write_note(root, split, f"{split}_note_{i:02d}", rng, rng.randint(3, 6))


if __name__ == "__main__":
    main()
