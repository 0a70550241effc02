"""Module: parameter discovery, state_dict round trip and all-or-nothing rejection."""

from __future__ import annotations

import json

import pytest

import textgraph as tg


class Hop(tg.Module):
    def __init__(self, engine, text):
        self.call = tg.LLMCall(
            engine, tg.Variable(text, role_description="hop prompt", requires_grad=True)
        )


class Pipeline(tg.Module):
    def __init__(self, engine):
        self.system = tg.Variable(
            "answer well", role_description="system prompt", requires_grad=True
        )
        self.answer = tg.LLMCall(engine, self.system)  # same Variable: found once
        self.hops = [Hop(engine, "hop one"), Hop(engine, "hop two")]
        self.notes = {
            "style": tg.Variable("be brief", role_description="style note", requires_grad=True)
        }
        self.fixed = tg.Variable("constant", role_description="fixed text")

    def forward(self, question):
        return self.answer(self.hops[1].call(self.hops[0].call(question)))


def test_named_parameters_are_found_once_in_attribute_order(engine):
    names = [n for n, _ in Pipeline(engine).named_parameters()]
    assert names == [
        "system",
        "hops.0.call.system_prompt",
        "hops.1.call.system_prompt",
        "notes.style",
    ]


def test_module_forward_builds_a_graph_back_to_every_parameter(engine):
    module = Pipeline(engine)
    out = module(tg.Variable("q", role_description="question"))
    tg.TextLoss("Judge.", engine=engine)(out).backward()
    got = {n: len(p.gradients) for n, p in module.named_parameters()}
    assert got == {
        "system": 1,
        "hops.0.call.system_prompt": 1,
        "hops.1.call.system_prompt": 1,
        "notes.style": 0,
    }


def test_state_dict_round_trip_through_a_file(engine, tmp_path):
    source = Pipeline(engine)
    source.system.value = "changed {braces} and ünïcode"
    path = source.save(tmp_path / "state.json")
    target = Pipeline(engine)
    target.load(path)
    assert target.state_dict() == source.state_dict()
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp files left


def test_mismatched_state_dict_raises_and_changes_nothing(engine):
    module = Pipeline(engine)
    before = module.state_dict()
    state = module.state_dict()
    state["parameters"]["system"]["value"] = "new"
    del state["parameters"]["notes.style"]
    state["parameters"]["extra"] = {"value": "x"}
    expected = r"missing \['notes.style'\].*unexpected \['extra'\]"
    with pytest.raises(tg.StateDictError, match=expected):
        module.load_state_dict(state)
    assert module.state_dict() == before

    bad_value = module.state_dict()
    bad_value["parameters"]["system"]["value"] = "new"
    bad_value["parameters"]["notes.style"]["value"] = 42
    with pytest.raises(tg.StateDictError, match=r"notes\.style"):
        module.load_state_dict(bad_value)
    assert module.state_dict() == before

    for broken in ({"format": "other"}, {**before, "version": 99}, "not a dict"):
        with pytest.raises(tg.StateDictError):
            module.load_state_dict(broken)


def test_loading_a_malformed_file_names_it(engine, tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"format": "textgraph.state_dict", "vers')
    with pytest.raises(tg.StateDictError, match=r"state.json is not valid JSON"):
        Pipeline(engine).load(path)
    with pytest.raises(tg.StateDictError, match="no state file"):
        Pipeline(engine).load(tmp_path / "absent.json")
