"""shared/ner/crf.py: allowed transitions, constrained Viterbi (never an invalid tag sequence, exact on small
cases) and the likelihood over labelled positions only."""

import itertools

import pytest
import torch

from shared.formats.tags import iob2_errors, label_list, split_tag
from shared.ner.crf import CrfTokenClassifier, allowed_transitions, constrained_viterbi  # noqa: E402

IOB2_LABELS = label_list([["B-p", "I-p", "B-t"]])  # O, B-p, I-p, B-t, I-t
BIOES_LABELS = label_list([["B-p", "I-p", "B-t"]], "BIOES")  # O, B-p, I-p, E-p, S-p, B-t, ...


def bioes_valid(tags: list[str]) -> bool:
    """Independent BIOES check: B/I must be followed by I/E of the same type; I/E must follow B/I of their type."""
    prev = "O"
    for tag in tags + ["O"]:
        p, t = split_tag(tag)
        pp, pt = split_tag(prev)
        if pp in ("B", "I") and not (p in ("I", "E") and t == pt):
            return False
        if p in ("I", "E") and not (pp in ("B", "I") and pt == t):
            return False
        prev = tag
    return True


def masks(labels):
    return allowed_transitions(labels)


def test_allowed_transitions_iob2_and_bioes():
    start, trans, end = allowed_transitions(IOB2_LABELS)
    i = {lab: k for k, lab in enumerate(IOB2_LABELS)}
    assert not start[i["I-p"]] and start[i["B-p"]] and start[i["O"]]
    assert not trans[i["O"], i["I-p"]] and not trans[i["B-t"], i["I-p"]]
    assert trans[i["B-p"], i["I-p"]] and trans[i["I-p"], i["I-p"]] and trans[i["I-p"], i["B-p"]]
    assert end.all()  # IOB2 may end anywhere
    start, trans, end = allowed_transitions(BIOES_LABELS)
    j = {lab: k for k, lab in enumerate(BIOES_LABELS)}
    assert not end[j["B-p"]] and not end[j["I-p"]] and end[j["E-p"]] and end[j["S-p"]]
    assert not trans[j["B-p"], j["O"]] and trans[j["B-p"], j["E-p"]] and not trans[j["E-p"], j["I-p"]]
    assert not start[j["E-p"]] and start[j["S-p"]]


@pytest.mark.parametrize("labels, valid", [(IOB2_LABELS, lambda tags: not iob2_errors(tags)),
                                           (BIOES_LABELS, bioes_valid)])
def test_decoding_never_emits_an_invalid_sequence_even_with_adversarial_scores(labels, valid):
    torch.manual_seed(0)
    n = len(labels)
    inside = torch.tensor([lab[:2] in ("I-", "E-") for lab in labels])
    batch, seq = 64, 12
    emissions = torch.randn(batch, seq, n) * 3
    emissions[:, :, inside] += 20.0  # every position screams "I-X" / "E-X"
    trans = torch.randn(n, n) * 5
    trans[:, inside] += 20.0  # and the learned transitions favour them after anything, O included
    start, end = torch.randn(n) + 20.0 * inside, torch.randn(n)
    lengths = torch.randint(1, seq + 1, (batch,))
    mask = torch.arange(seq).unsqueeze(0) < lengths.unsqueeze(1)
    paths = constrained_viterbi(emissions, mask, start, trans, end, *masks(labels))
    for row in range(batch):
        tags = [labels[k] for k in paths[row, : lengths[row]].tolist()]
        assert valid(tags), tags
    # the unconstrained argmax would have been invalid everywhere: the constraint did the work
    assert not valid([labels[k] for k in emissions[0, :3].argmax(-1).tolist()])


def test_constrained_viterbi_is_the_best_valid_path():
    torch.manual_seed(1)
    labels = IOB2_LABELS
    n, seq = len(labels), 4
    emissions, trans = torch.randn(3, seq, n) * 2, torch.randn(n, n)
    start, end = torch.randn(n), torch.randn(n)
    mask = torch.ones(3, seq, dtype=torch.bool)
    mask[1, 3:] = False
    paths = constrained_viterbi(emissions, mask, start, trans, end, *masks(labels))
    for row in range(3):
        length = int(mask[row].sum())
        best, best_score = None, -float("inf")
        for path in itertools.product(range(n), repeat=length):
            if iob2_errors([labels[k] for k in path]):
                continue
            score = start[path[0]] + end[path[-1]] + sum(emissions[row, t, k] for t, k in enumerate(path))
            score += sum(trans[a, b] for a, b in zip(path, path[1:]))
            if score > best_score:
                best, best_score = path, score
        assert tuple(paths[row, :length].tolist()) == best


def test_unconstrained_viterbi_matches_pytorch_crf():
    from torchcrf import CRF

    torch.manual_seed(2)
    crf = CRF(5, batch_first=True)
    emissions = torch.randn(4, 7, 5)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([[7], [3], [1], [5]])
    everything = (torch.ones(5, dtype=torch.bool), torch.ones(5, 5, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
    ours = constrained_viterbi(emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions,
                               *everything)
    theirs = crf.decode(emissions, mask=mask)
    assert [ours[i, : len(p)].tolist() for i, p in enumerate(theirs)] == theirs


class _Emitter(torch.nn.Module):
    """Stands in for a token-classification model: returns fixed emissions."""

    def __init__(self, emissions):
        super().__init__()
        self.emissions = emissions

    def forward(self, **kwargs):
        from transformers.modeling_outputs import TokenClassifierOutput

        return TokenClassifierOutput(logits=self.emissions)


def test_likelihood_reads_only_labelled_positions_and_decoding_fills_them():
    torch.manual_seed(3)
    emissions = torch.randn(2, 6, len(IOB2_LABELS))
    model = CrfTokenClassifier(_Emitter(emissions), IOB2_LABELS)
    labels = torch.tensor([[-100, 1, -100, 2, 0, -100], [-100, 3, 4, -100, -100, -100]])
    loss = model(input_ids=torch.zeros(2, 6, dtype=torch.long), labels=labels).loss
    # the same as pytorch-crf on the compacted sequences
    em = torch.stack([emissions[0, [1, 3, 4]], torch.cat([emissions[1, [1, 2]], torch.zeros(1, 5)])])
    tags = torch.tensor([[1, 2, 0], [3, 4, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    expected = -model.crf(em, tags, mask=mask, reduction="sum") / 5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    scored = labels != -100
    decoded = model.decode(emissions, scored)
    assert decoded.shape == (2, 6)
    assert not iob2_errors([IOB2_LABELS[k] for k in decoded[0][scored[0]].tolist()])
