"""PromptMMStudent's sizes (hidden size, parameter count, serving bytes) and PromptMMTeacher's graphs when it wears
the prompt, on tests/hand_example.py's example (3 users, 3 items, 5 interactions; row 0 of each side: padding).
"""

from __future__ import annotations

import torch

from tests.hand_example import S, build


def test_student_size_parameters_and_serving_bytes(tmp_path):
    """student_embedding_size 3 (embedding_size 2 is the fallback). Parameters: 2 tables of 4 rows x 3 = 24.
    Serving bytes: the (4 + 4) x (4 + 4) LightGCN adjacency in CSR, 10 entries (5 edges, both directions):
    crow_indices 9 int64 = 72, col_indices 10 int64 = 80, values 10 float32 = 40 -> 192; plus 24 float32 = 96
    -> 288."""
    model, _ = build("PromptMMStudent", tmp_path, student_embedding_size=3)
    assert model.embedding_size == 3
    assert model.user_embedding.weight.shape == (4, 3) and model.item_embedding.weight.shape == (4, 3)
    assert model.used_parameters() == 24
    assert model.adjacency.nbytes() == 72 + 80 + 40
    assert model.serving_bytes() == 192 + 96
    fallback, _ = build("PromptMMStudent", tmp_path, student_embedding_size=None)
    assert fallback.embedding_size == 2 and fallback.used_parameters() == 16


# one_sided (each side's rows of R scaled by its own (degree)^-1/2; d_u = 2, 2, 1, d_i = 1, 2, 2):
#   A_ui = [[S, S, 0], [0, S, S], [0, 0, 1]],  A_iu = [[1, 0, 0], [S, S, 0], [0, S, S]]  (padding row / column 0)
ONE_SIDED_UI = [[0, 0, 0, 0], [0, S, S, 0], [0, 0, S, S], [0, 0, 0, 1]]
ONE_SIDED_IU = [[0, 0, 0, 0], [0, 1, 0, 0], [0, S, S, 0], [0, 0, S, S]]


def test_prompted_teacher_builds_its_own_graphs_first(tmp_path):
    """With the prompt on, the teacher's graphs (its graph_norm, here one_sided) are built for the prompt's user
    tokens h_u = A_ui h_i, and are the ones the teacher propagates with."""
    model, _ = build("PromptMMTeacher", tmp_path, prompt=True, graph_norm="one_sided")
    ui = torch.tensor(ONE_SIDED_UI, dtype=torch.float32)
    assert torch.allclose(model.a_ui.matrix.to_dense(), ui, atol=1e-6)
    assert torch.allclose(model.a_iu.matrix.to_dense(), torch.tensor(ONE_SIDED_IU, dtype=torch.float32), atol=1e-6)
    assert torch.allclose(model.prompt.h_u, ui @ model.prompt.h_i, atol=1e-5)
