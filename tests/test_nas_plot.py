"""Pictures of cells, search curves and Pareto fronts (cvjax/nas/plot.py)."""

import itertools

import numpy as np
import pytest
from PIL import Image

from cvjax.errors import UserError
from cvjax.nas import plot
from cvjax.nas.genotypes import DARTS_V1, DARTS_V2

NB201_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
NB201_B = "|none~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"
B0 = "k3e1se1d1-k3e6se1d2-k5e6se1d2-k3e6se1d3-k5e6se1d3-k5e6se1d4-k3e6se1d1"


def pixels(path) -> np.ndarray:
    """The PNG at `path` as an array, after checking it is a plausible figure."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGBA"
        width, height = image.size
        assert 200 <= width <= 2000 and 100 <= height <= 2500, image.size
        array = np.asarray(image)
    # Not blank: a drawing has both background and ink.
    assert array[..., :3].min() < 100 and array[..., :3].max() > 200
    return array


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or not np.array_equal(a, b)


def test_nb201_cells_draw_and_differ(tmp_path):
    a = plot.draw_nb201_cell(NB201_A, str(tmp_path / "a.png"))
    b = plot.draw_nb201_cell(NB201_B, str(tmp_path / "sub" / "b.png"))  # Creates the folder.
    assert a == str(tmp_path / "a.png")
    assert differ(pixels(a), pixels(b))
    # Drawing is deterministic: the same cell gives the same pixels.
    again = plot.draw_nb201_cell(NB201_A, str(tmp_path / "a2.png"))
    assert not differ(pixels(a), pixels(again))


@pytest.mark.parametrize(
    "arch",
    [
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # Unknown op.
        "|none~0|+|none~0|none~1|",  # Two nodes.
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",  # Wrong input.
        "",
    ],
)
def test_nb201_bad_strings(tmp_path, arch):
    with pytest.raises(UserError):
        plot.draw_nb201_cell(arch, str(tmp_path / "x.png"))


@pytest.mark.parametrize("name", ["NASNET_A", "DARTS_V1", "DARTS_V2"])
def test_genotypes_draw(tmp_path, name):
    pixels(plot.draw_genotype(name, str(tmp_path / f"{name}.png")))


def test_genotype_inputs_agree_and_cells_differ(tmp_path):
    by_name = pixels(plot.draw_genotype("DARTS_V2", str(tmp_path / "name.png")))
    by_repr = pixels(plot.draw_genotype(str(DARTS_V2), str(tmp_path / "repr.png")))
    by_object = pixels(plot.draw_cell("darts", DARTS_V2, str(tmp_path / "object.png")))
    assert not differ(by_name, by_repr) and not differ(by_name, by_object)
    assert differ(by_name, pixels(plot.draw_genotype(DARTS_V1, str(tmp_path / "v1.png"))))


def test_genotype_bad_input(tmp_path):
    with pytest.raises(UserError):
        plot.draw_genotype("DARTS_V9", str(tmp_path / "x.png"))
    with pytest.raises(UserError):
        plot.draw_genotype(
            "Genotype(normal=[('conv_9x9', 0)], normal_concat=[2], reduce=[], reduce_concat=[])",
            str(tmp_path / "x.png"),
        )


def test_draw_cell_dispatches(tmp_path):
    direct = pixels(plot.draw_nb201_cell(NB201_A, str(tmp_path / "direct.png")))
    via = pixels(plot.draw_cell("nb201", NB201_A, str(tmp_path / "via.png")))
    assert not differ(direct, via)
    b0 = pixels(plot.draw_cell("mbconv", B0, str(tmp_path / "b0.png")))
    other = B0.replace("k5e6se1d4", "k7e3se0d5")
    assert differ(b0, pixels(plot.draw_cell("mbconv", other, str(tmp_path / "other.png"))))
    paper = "alpha=1.20,beta=1.10,gamma=1.15"
    c1 = pixels(plot.draw_cell("compound", paper, str(tmp_path / "c1.png")))
    c2 = pixels(
        plot.draw_cell("compound", "alpha=1.40,beta=1.20,gamma=1.00", str(tmp_path / "c2.png"))
    )
    assert differ(c1, c2)


@pytest.mark.parametrize(
    "space, arch",
    [
        ("resnet", NB201_A),  # Unknown space.
        ("mbconv", "k3e6se1"),  # No depth.
        ("mbconv", "k3e6se1d2-kxe6se1d2"),
        ("mbconv", ""),
        ("compound", "alpha=big,beta=1.1,gamma=1.15"),
        ("compound", "1.2,1.1,1.15"),
        ("darts", "not a genotype"),
    ],
)
def test_draw_cell_bad_input(tmp_path, space, arch):
    with pytest.raises(UserError):
        plot.draw_cell(space, arch, str(tmp_path / "x.png"))


def curves(shift: float = 0.0):
    queries = np.arange(1, 101)
    return {
        "random": (queries, 93.0 - 2.0 / np.sqrt(queries) + shift, 0.2 / np.sqrt(queries)),
        "evolution": (list(queries), list(94.0 - 3.0 / queries), [0.1] * 100),
    }


def test_search_curves(tmp_path):
    plain = pixels(plot.plot_search_curves(curves(), str(tmp_path / "a.png")))
    with_optimum = plot.plot_search_curves(
        curves(), str(tmp_path / "b.png"), optimum=94.37, title="NB201", log_x=True
    )
    assert differ(plain, pixels(with_optimum))
    assert differ(plain, pixels(plot.plot_search_curves(curves(0.5), str(tmp_path / "c.png"))))


def test_search_curves_bad_input(tmp_path):
    with pytest.raises(UserError):
        plot.plot_search_curves({}, str(tmp_path / "x.png"))
    with pytest.raises(UserError):
        plot.plot_search_curves({"random": ([1, 2, 3], [90, 91], [0, 0])}, str(tmp_path / "x.png"))


def test_pareto_front_by_hand():
    points = [
        (1.0, 50.0),  # 0: front.
        (2.0, 60.0),  # 1: front.
        (2.0, 55.0),  # 2: same cost as 1, lower accuracy.
        (0.5, 40.0),  # 3: front, the cheapest.
        (3.0, 60.0),  # 4: ties 1's accuracy at a higher cost.
        (2.0, 60.0),  # 5: duplicate of 1: neither dominates the other.
        (4.0, 70.0),  # 6: front, the most accurate.
        (5.0, 65.0),  # 7: dominated by 6.
        (0.5, 30.0),  # 8: same cost as 3, lower accuracy.
        (3.0, 60.0),  # 9: duplicate of the dominated 4.
    ]
    assert plot.pareto_front(points) == [3, 0, 1, 5, 6]
    assert plot.pareto_front([]) == []
    assert plot.pareto_front([(1, 1)]) == [0]
    assert plot.pareto_front([(1, 1), (1, 1)]) == [0, 1]
    assert plot.pareto_front([(2, 5), (1, 5)]) == [1]
    assert plot.pareto_front(np.array([(1, 5), (1, 7), (1, 6)])) == [1]
    with pytest.raises(UserError):
        plot.pareto_front([(1.0, float("nan"))])


def test_pareto_front_matches_definition():
    """On integer points (many ties), the sweep equals the pairwise definition of dominance."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = [tuple(p) for p in rng.integers(0, 6, size=(int(rng.integers(1, 40)), 2))]

        dominated = [any(p[0] <= q[0] and p[1] >= q[1] and p != q for p in points) for q in points]
        expected = sorted(
            (i for i in range(len(points)) if not dominated[i]),
            key=lambda i: (points[i][0], i),
        )
        front = plot.pareto_front(points)
        assert front == expected
        assert all(a[1] < b[1] or a == b for a, b in itertools.pairwise(points[i] for i in front))


def test_plot_pareto(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.uniform(0.0, 1.0, size=(50, 2))
    a = pixels(plot.plot_pareto(points, str(tmp_path / "a.png")))
    b = pixels(plot.plot_pareto(points[:25], str(tmp_path / "b.png"), xlabel="params (M)"))
    assert differ(a, b)
    # An explicit front is drawn as given.
    front = plot.pareto_front(points)
    c = pixels(plot.plot_pareto(points, str(tmp_path / "c.png"), front=front))
    assert not differ(a, c)
    with pytest.raises(UserError):
        plot.plot_pareto(points, str(tmp_path / "x.png"), front=[50])
    with pytest.raises(UserError):
        plot.plot_pareto([], str(tmp_path / "x.png"))
    with pytest.raises(UserError):
        plot.plot_pareto([(1, 2, 3), (4, 5, 6)], str(tmp_path / "x.png"))
