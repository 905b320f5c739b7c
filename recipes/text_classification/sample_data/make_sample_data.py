#!/usr/bin/env python
"""Write the bundled sample data: short SYNTHETIC referral notes, one specialty per note (no real patient text).

    python recipes/text_classification/make_sample_data.py  # rewrites sample_data/{train,validation,test}.csv

The classes are imbalanced on purpose (as clinical data usually is) and the notes share vocabulary across
classes, so the task is learnable but not trivial. Deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

SPECIALTIES = {
    # label: (share of notes, specialty-specific findings)
    "cardiology": (0.40, [
        "exertional chest pain radiating to the left arm", "palpitations and an irregularly irregular pulse",
        "troponin mildly elevated", "new systolic murmur", "ankle oedema and orthopnoea", "ST depression on ECG",
        "poorly controlled hypertension", "syncope on exertion", "reduced ejection fraction on echo",
    ]),
    "respiratory": (0.30, [
        "productive cough for three weeks", "wheeze and reduced peak flow", "crackles at the right base",
        "oxygen saturation 89% on room air", "haemoptysis", "shortness of breath on minimal exertion",
        "consolidation on chest x-ray", "nocturnal cough and chest tightness", "pleuritic pain on deep inspiration",
    ]),
    "gastroenterology": (0.20, [
        "epigastric pain after meals", "melaena for two days", "right upper quadrant tenderness",
        "altered bowel habit with weight loss", "dysphagia to solids", "raised ALT and bilirubin",
        "persistent diarrhoea", "iron deficiency anaemia", "vomiting and abdominal distension",
    ]),
    "neurology": (0.10, [
        "sudden onset left-sided weakness", "recurrent headaches worse in the morning", "first generalised seizure",
        "numbness in both feet", "slurred speech that resolved within an hour", "tremor at rest",
        "double vision", "progressive memory loss", "facial droop",
    ]),
}
OPENINGS = [
    "{age}-year-old {sex} referred with", "Patient ({age}{s}) presents with", "Seen in clinic today:",
    "GP referral, {age}{s}, reporting", "Admitted overnight with",
]
SHARED = [
    "fatigue", "history of type 2 diabetes", "smoker", "on metformin", "lives alone", "no known drug allergies",
    "mild fever", "poor sleep", "anxious about symptoms", "recent travel", "family history of heart disease",
    "reduced appetite", "dizziness", "BMI 31",
]
CLOSINGS = [
    "Please assess.", "Grateful for your opinion.", "Routine review requested.", "Urgent review requested.",
    "Bloods attached.", "Awaiting further tests.",
]


def make_note(label: str, rng: random.Random) -> str:
    own = SPECIALTIES[label][1]
    others = [f for name, (_, findings) in SPECIALTIES.items() if name != label for f in findings]
    findings = rng.sample(own, k=rng.choice([1, 2, 2, 3]))
    if rng.random() < 0.35:  # a finding typical of another specialty makes some notes ambiguous
        findings.append(rng.choice(others))
    findings += rng.sample(SHARED, k=rng.choice([1, 2, 3]))
    rng.shuffle(findings)
    sex = rng.choice(["man", "woman"])
    opening = rng.choice(OPENINGS).format(age=rng.randint(19, 92), sex=sex, s=sex[0].upper())
    return f"{opening} {', '.join(findings)}. {rng.choice(CLOSINGS)}"


def write_split(path: Path, size: int, rng: random.Random) -> None:
    labels = list(SPECIALTIES)
    shares = [SPECIALTIES[label][0] for label in labels]
    rows = [(make_note(label, rng), label) for label in rng.choices(labels, weights=shares, k=size)]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=Path(__file__).parent / "sample_data", type=Path)
    parser.add_argument("--seed", default=7, type=int)
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for split, size in (("train", 400), ("validation", 80), ("test", 120)):
        write_split(args.output_dir / f"{split}.csv", size, rng)


if __name__ == "__main__":
    main()
