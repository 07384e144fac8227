"""Serving: checkpoint -> export -> load -> recommend equals RecBole's full_sort_topk; seen items excluded or kept
as asked; the popularity fallback for users without training interactions; unknown users and corrupted artefacts
refused; the HTTP endpoint answers on a loopback port; the artefact serves with numpy alone."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.utils.case_study import full_sort_topk

from recbole_promptmm import run
from recbole_promptmm.serving.artefact import ArtefactError, Recommender, UnknownUserError, write_artefact
from recbole_promptmm.serving.export import NotDotProductError, export, load_run
from recbole_promptmm.serving.http import RecommendationServer
from tests.conftest import REPO

QUICK = {"epochs": 1, "student_epochs": 1, "train_batch_size": 4096, "show_progress": False}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: with more, torch's sparse products add in a varying order, so the forward that export
    runs and the one full_sort_topk runs can differ in the last bits and swap two near-equal scores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Checkpoints of LightGCN and of PromptMM's student on ml-100k (1 epoch each), and LightGCN's result JSON."""
    folder = tmp_path_factory.mktemp("serving")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        lightgcn = run("LightGCN", "ml-100k", config_dict=QUICK, result_json=str(folder / "lightgcn.json"))
        promptmm = run("PromptMM", "ml-100k", config_dict=QUICK)
    finally:
        os.chdir(cwd)
    return {"LightGCN": str(folder / lightgcn["checkpoint"]), "student": str(folder / promptmm["student_checkpoint"]),
            "result_json": str(folder / "lightgcn.json")}


@pytest.mark.parametrize("which", ["LightGCN", "student"])
def test_exported_top20_equals_full_sort_topk(trained, tmp_path, which):
    meta = export(trained[which], str(tmp_path / "art"))
    assert meta["model"] == ("LightGCN" if which == "LightGCN" else "PromptMMStudent")
    rec = Recommender.load(str(tmp_path / "art"))
    loaded = load_run(trained[which])
    users = np.arange(1, loaded.train_data._dataset.user_num)
    expected_scores, expected = full_sort_topk(users, loaded.model, loaded.valid_data, 20)  # history = train
    items, scores = rec.top_k(rec.scores(users), users, 20)
    np.testing.assert_allclose(scores, expected_scores.numpy(), rtol=1e-5, atol=1e-6)
    # Same items in the same order, except among scores equal up to float32 rounding (torch and numpy sum the
    # dot products in different orders; torch.topk orders exact ties freely).
    tie = 1e-6 * np.abs(scores).max()
    distinct = np.ones_like(items, dtype=bool)
    distinct[:, 1:] &= scores[:, :-1] - scores[:, 1:] > tie
    distinct[:, :-1] &= scores[:, :-1] - scores[:, 1:] > tie
    assert (items[distinct] == expected.numpy()[distinct]).all()
    assert distinct.mean() > 0.95


def test_seen_items_excluded_or_kept_and_metadata(trained, tmp_path):
    export(trained["LightGCN"], str(tmp_path / "art"), result_json=trained["result_json"])
    rec = Recommender.load(str(tmp_path / "art"))
    result = json.loads(Path(trained["result_json"]).read_text())
    assert rec.meta["metrics"]["test"] == result["test_result"]
    assert set(rec.meta["versions"]) >= {"recbole", "torch", "numpy", "recbole_promptmm"}
    users = rec.user_tokens[1:50].tolist()
    unseen, kept = rec.recommend(users, k=20), rec.recommend(users, k=20, include_seen=True)
    with_seen = 0
    for token, a, b in zip(users, unseen, kept):
        u = rec.user_ids([token])[0]
        seen = set(rec.item_tokens[rec.seen_indices[rec.seen_indptr[u]:rec.seen_indptr[u + 1]]])
        assert not seen & set(a.items)
        with_seen += bool(seen & set(b.items))
        full = rec.scores(np.array([u]))[0]
        full[0] = -np.inf
        assert b.items == rec.item_tokens[np.argsort(-full, kind="stable")[:20]].tolist()
    assert with_seen > 10  # ml-100k users' top 20 are full of their own training items


def _hand_artefact(folder: Path) -> Recommender:
    """3 users (u1: items i1 seen; u2: nothing seen, cold; u3: i2, i3 seen), 4 items, 2-d embeddings."""
    user = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)        # row 0 padding
    item = np.array([[9, 9], [3, 0], [2, 1], [1, 2], [0, 3]], dtype=np.float32)  # row 0 padding: never chosen
    arrays = {"user": user, "item": item, "user_tokens": np.array(["[PAD]", "u1", "u2", "u3"]),
              "item_tokens": np.array(["[PAD]", "i1", "i2", "i3", "i4"]),
              "seen_indptr": np.array([0, 0, 1, 1, 3]), "seen_indices": np.array([1, 2, 3]),
              "popularity": np.array([0, 1, 1, 1, 0])}
    # u2 has no training row at all; popularity ties break by item id
    write_artefact(str(folder), arrays, {"model": "Hand", "dataset": "hand"})
    return Recommender.load(str(folder))


def test_hand_made_artefact_fallback_and_errors(tmp_path):
    rec = _hand_artefact(tmp_path / "hand")
    u1, u2, u3 = rec.recommend(["u1", "u2", "u3"], k=2)
    # u1 = (1, 0): scores i1 3, i2 2, i3 1, i4 0; i1 seen
    assert (u1.items, u1.scores, u1.fallback) == (["i2", "i3"], [2.0, 1.0], None)
    assert u2.fallback == "popularity" and u2.items == ["i1", "i2"]
    # u3 = (1, 1): i1 3, i2 3, i3 3, i4 3 (all tied); i2, i3 seen -> i1, i4 (ties: lower id first)
    assert u3.items == ["i1", "i4"] and u3.scores == [3.0, 3.0]
    assert rec.recommend(["u3"], k=10)[0].items == ["i1", "i4"]  # fewer unseen items than k
    with pytest.raises(UnknownUserError, match="unknown user 'nobody'"):
        rec.recommend(["u1", "nobody"])
    with pytest.raises(UnknownUserError):
        rec.recommend(["[PAD]"])

    arrays = tmp_path / "hand" / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="does not match the checksum"):
        Recommender.load(str(tmp_path / "hand"))
    (tmp_path / "hand" / "meta.json").write_text("{not json")
    with pytest.raises(ArtefactError, match="not valid JSON"):
        Recommender.load(str(tmp_path / "hand"))
    with pytest.raises(ArtefactError, match="does not exist"):
        Recommender.load(str(tmp_path / "nothing"))


def test_faiss_search_agrees_with_exact_search_on_a_small_catalogue(trained, tmp_path):
    """HNSW with a search breadth above the catalogue size is exact: same lists as the exact search, seen items
    still excluded."""
    pytest.importorskip("faiss")
    export(trained["LightGCN"], str(tmp_path / "art"))
    exact = Recommender.load(str(tmp_path / "art"))
    approx = Recommender.load(str(tmp_path / "art")).use_faiss(ef_search=4096)
    users = exact.user_tokens[1:40].tolist()
    for a, b in zip(exact.recommend(users, k=10), approx.recommend(users, k=10)):
        assert b.items == a.items
        np.testing.assert_allclose(b.scores, a.scores, rtol=1e-5)


def test_export_refuses_a_model_without_embedding_tables(tmp_path):
    result = run("Pop", "ml-100k", config_dict=QUICK)
    with pytest.raises(NotDotProductError, match="Pop has no user and item embedding tables"):
        export(result["checkpoint"], str(tmp_path / "art"))
    assert not (tmp_path / "art").exists()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_http_endpoint_answers_and_shuts_down(tmp_path):
    rec = _hand_artefact(tmp_path / "hand")
    server = RecommendationServer(rec, "127.0.0.1", 0)
    thread = server.start_background()
    try:
        status, health = _get(server.url + "/health")
        assert status == 200 and health == {"status": "ok", "model": "Hand", "dataset": "hand", "users": 3, "items": 4}
        status, body = _get(server.url + "/recommend?user=u1&user=u2&k=2")
        assert status == 200 and body["recommendations"] == [r.to_dict() for r in rec.recommend(["u1", "u2"], k=2)]
        status, body = _get(server.url + "/recommend?user=u1&k=1&include_seen=1")
        assert body["recommendations"][0]["items"] == ["i1"]
        assert _get(server.url + "/recommend?user=nobody")[0] == 404
        assert _get(server.url + "/recommend?user=u1&k=zero")[0] == 400
        assert _get(server.url + "/recommend")[0] == 400
        assert _get(server.url + "/other")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_artefact_serves_with_numpy_alone(tmp_path):
    _hand_artefact(tmp_path / "hand")
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'recbole', 'scipy', 'pandas', 'ray'):
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name.split('.')[0])
sys.meta_path.insert(0, Block())
from recbole_promptmm.serving.artefact import Recommender
print(Recommender.load({str(tmp_path / 'hand')!r}).recommend(['u1'], k=2)[0].items)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['i2', 'i3']"


def test_recommend_command_writes_csv_and_jsonl(trained, tmp_path):
    from recbole_promptmm.cli import main

    export(trained["LightGCN"], str(tmp_path / "art"))
    rec = Recommender.load(str(tmp_path / "art"))
    users = rec.user_tokens[1:4].tolist()
    expected = rec.recommend(users, k=5)
    assert main(["recommend", f"--checkpoint={trained['LightGCN']}", f"--out={tmp_path / 'top.csv'}",
                 f"--users={','.join(users)}", "--k=5"]) == 0
    rows = list(csv.DictReader((tmp_path / "top.csv").open()))
    assert [(r["user"], r["item"]) for r in rows] == [(e.user, i) for e in expected for i in e.items]
    assert [int(r["rank"]) for r in rows[:5]] == [1, 2, 3, 4, 5]
    assert main(["recommend", f"--checkpoint={trained['LightGCN']}", f"--out={tmp_path / 'all.jsonl'}", "--k=3"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert len(lines) == len(rec.user_tokens) - 1
    assert lines[0]["items"] == rec.recommend([lines[0]["user"]], k=3)[0].items
    assert main(["recommend", f"--checkpoint={trained['LightGCN']}", f"--out={tmp_path / 'bad.csv'}",
                 "--users=nobody"]) == 2
    assert not (tmp_path / "bad.csv").exists()
