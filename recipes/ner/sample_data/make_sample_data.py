"""Regenerate the synthetic i2b2-format sample notes in ../sample_data (deterministic; no real patient text).

Every sentence is built from templates with invented findings, tests and treatments, so the notes are safe to ship
and to print. Run from anywhere: ``python recipes/ner/sample_data/make_sample_data.py``.
"""

import os
import random

PROBLEMS = ["chest pain", "shortness of breath", "fever", "cough", "hypertension", "type 2 diabetes",
            "atrial fibrillation", "pneumonia", "abdominal pain", "nausea", "headache", "anemia",
            "acute kidney injury", "urinary tract infection", "lower extremity edema", "syncope",
            "congestive heart failure", "dizziness", "rash", "back pain"]
TESTS = ["chest x-ray", "ecg", "cbc", "basic metabolic panel", "troponin", "ct scan of the head",
         "urinalysis", "blood cultures", "echocardiogram", "hemoglobin a1c", "lipid panel", "ultrasound",
         "creatinine", "mri of the spine", "blood pressure"]
TREATMENTS = ["aspirin", "metoprolol", "lisinopril", "metformin", "insulin", "ceftriaxone", "azithromycin",
              "furosemide", "heparin", "acetaminophen", "ondansetron", "physical therapy", "oxygen",
              "iron supplementation", "normal saline", "warfarin", "atorvastatin"]
TEMPLATES = [
    "The patient is a 64 year old man with a history of {P} and {P} .",
    "She presented with {P} and was noted to have {P} on arrival .",
    "A {T} was obtained and showed no acute findings .",
    "{T} and {T} were within normal limits .",
    "He was started on {R} for {P} .",
    "The patient was treated with {R} and {R} with improvement of {P} .",
    "{P} resolved after {R} was given .",
    "Her {T} revealed {P} .",
    "Denies {P} , {P} or {P} .",
    "Continue {R} 40 mg daily and follow up in clinic .",
    "Repeat {T} in the morning .",
    "Discharged home in stable condition .",
    "Plan : {R} , monitor {T} , and reassess {P} .",
    "No {P} was seen on {T} .",
    "Family history is negative for {P} .",
]
TYPES = {"P": ("problem", PROBLEMS), "T": ("test", TESTS), "R": ("treatment", TREATMENTS)}


def sentence(rng):
    template = rng.choice(TEMPLATES)
    tokens, concepts = [], []
    for piece in template.split(" "):
        if piece.startswith("{") and piece.endswith("}"):
            ctype, pool = TYPES[piece[1]]
            words = rng.choice(pool).split(" ")
            if len(tokens) == 0:
                words = [words[0].capitalize()] + words[1:]
            concepts.append((len(tokens), len(tokens) + len(words) - 1, ctype))
            tokens += words
        else:
            tokens.append(piece)
    return tokens, concepts


def note(rng, n_lines):
    lines, cons = [], []
    for k in range(1, n_lines + 1):
        if rng.random() < 0.1:
            lines.append("")  # section breaks: empty lines occur in real notes
            continue
        toks, concepts = sentence(rng)
        lines.append(" ".join(toks))
        for s, e, ctype in concepts:
            text = " ".join(toks[s:e + 1]).lower()
            cons.append(f'c="{text}" {k}:{s} {k}:{e}||t="{ctype}"')
    return "\n".join(lines) + "\n", "".join(c + "\n" for c in cons)


def main():
    rng = random.Random(2010)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sample_data")
    # train and validation: .txt and .con side by side; test: txt/ + concept/ subfolders (both layouts exist).
    for split, n_notes, sub in (("train", 24, False), ("validation", 6, False), ("test", 6, True)):
        for i in range(n_notes):
            txt, con = note(rng, rng.randint(8, 16))
            name = f"{split}_note_{i:02d}"
            txt_dir = os.path.join(root, split, "txt") if sub else os.path.join(root, split)
            con_dir = os.path.join(root, split, "concept") if sub else os.path.join(root, split)
            os.makedirs(txt_dir, exist_ok=True)
            os.makedirs(con_dir, exist_ok=True)
            with open(os.path.join(txt_dir, name + ".txt"), "w", newline="") as f:
                f.write(txt)
            with open(os.path.join(con_dir, name + ".con"), "w", newline="") as f:
                f.write(con)


if __name__ == "__main__":
    main()
