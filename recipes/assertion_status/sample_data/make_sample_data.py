"""Regenerate the synthetic i2b2-format notes with assertions in ../sample_data (deterministic; no real patient text).

Each note is a few sentences built from templates with invented problems, tests and treatments; the template's cue
("denies", "possible", "if ... develops", "mother has") sets the assertion of each problem, as i2b2 2010 annotates
it. Writes ``{train,validation,test}/note_NN.{txt,con,ast}``. Run: ``python recipes/assertion_status/sample_data/make_sample_data.py``.
"""

import os
import random

PROBLEMS = ["chest pain", "shortness of breath", "fever", "cough", "hypertension", "pneumonia", "abdominal pain",
            "nausea", "headache", "anemia", "syncope", "dizziness", "rash", "back pain", "diabetes", "asthma"]
TESTS = ["chest x-ray", "ecg", "cbc", "troponin", "urinalysis", "echocardiogram", "ct scan"]
TREATMENTS = ["aspirin", "metoprolol", "lisinopril", "insulin", "ceftriaxone", "furosemide", "heparin", "oxygen"]
# (template, assertion of every {P} in it)
TEMPLATES = [
    ("The patient has {P} .", "present"),
    ("She presented with {P} and {P} .", "present"),
    ("He was started on {R} for {P} .", "present"),
    ("Her {T} revealed {P} .", "present"),
    ("Denies {P} or {P} .", "absent"),
    ("No evidence of {P} on {T} .", "absent"),
    ("The patient denies {P} .", "absent"),
    ("Possible {P} , will obtain {T} .", "possible"),
    ("Concern for {P} .", "possible"),
    ("{P} is likely but not confirmed .", "possible"),
    ("She reports {P} when climbing stairs .", "conditional"),
    ("He gets {P} only with exertion .", "conditional"),
    ("Return if {P} develops .", "hypothetical"),
    ("Call the clinic should {P} occur .", "hypothetical"),
    ("Her mother has {P} .", "associated_with_someone_else"),
    ("Family history of {P} in his father .", "associated_with_someone_else"),
    ("Continue {R} and repeat {T} tomorrow .", None),
]
TYPES = {"P": ("problem", PROBLEMS), "T": ("test", TESTS), "R": ("treatment", TREATMENTS)}
SPLITS = {"train": 36, "validation": 12, "test": 12}


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


def write_note(folder, name, rng, n_lines):
    lines, con, ast = [], [], []
    weights = [4 if assertion == "present" else 1 for _, assertion in TEMPLATES]  # imbalanced, as in i2b2
    for k in range(1, n_lines + 1):
        template, assertion = rng.choices(TEMPLATES, weights)[0]
        tokens, concepts = sentence(rng, template)
        lines.append(" ".join(tokens))
        for start, end, ctype in concepts:
            text = " ".join(tokens[start:end + 1]).lower()
            span = f'c="{text}" {k}:{start} {k}:{end}'
            con.append(f'{span}||t="{ctype}"')
            if ctype == "problem":
                ast.append(f'{span}||t="problem"||a="{assertion}"')
    for suffix, body in ((".txt", lines), (".con", con), (".ast", ast)):
        with open(os.path.join(folder, name + suffix), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(line + "\n" for line in body))


def main():
    root = os.path.dirname(os.path.abspath(__file__))
    rng = random.Random(2010)
    for split, n in SPLITS.items():
        folder = os.path.join(root, split)
        os.makedirs(folder, exist_ok=True)
        for i in range(n):
            write_note(folder, f"{split}_note_{i:02d}", rng, rng.randint(4, 8))


if __name__ == "__main__":
    main()
