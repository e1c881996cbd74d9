"""Teacher→student methods on tiny tensors, checked against formulas written out with loops."""
from __future__ import annotations

import math

import pytest
import torch
from reference_math import kl, softmax, unit

import segkd.distill.cirkd  # noqa: F401  (registers "cirkd")
import segkd.distill.cwd  # noqa: F401
import segkd.distill.dist  # noqa: F401
import segkd.distill.feature_kd  # noqa: F401
import segkd.distill.ifvd  # noqa: F401
import segkd.distill.logits_kd  # noqa: F401
import segkd.distill.skd  # noqa: F401
from segkd.distill.base import DistillMethod, build_method

METHOD_NAMES = ["logits_kd", "feature_kd", "cwd", "skd", "ifvd", "dist", "cirkd"]

# 1×2×2×2 logits (classes × rows × cols) and a label map whose bottom-right pixel is ignored.
STUDENT_2X2 = [[[0.5, -1.0], [2.0, 0.0]], [[1.5, 0.3], [-0.7, 1.2]]]
TEACHER_2X2 = [[[1.0, 0.2], [0.1, -0.4]], [[-0.5, 0.8], [1.1, 2.5]]]
MASK_2X2 = [[0, 1], [1, 255]]


# ----------------------------------------------------------------------------- plain-Python maths


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def pearson(a: list[float], b: list[float]) -> float:
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    return cosine([x - mean_a for x in a], [y - mean_b for y in b])


def pixel(x: list, i: int, j: int) -> list[float]:
    """Channel vector at row i, column j of a C×H×W nested list."""
    return [channel[i][j] for channel in x]


# ----------------------------------------------------------------------------- test helpers
def tensors(student: list, teacher: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-1 student / teacher tensors; both require grad so a missing detach shows."""
    s = torch.tensor([student], requires_grad=True)
    t = torch.tensor([teacher], requires_grad=True)
    return s, t


def prepared(name: str, s: torch.Tensor, t: torch.Tensor, **options) -> DistillMethod:
    """Build a method and run ``setup`` with the shapes of the tensors it will read."""
    method = build_method({"name": name, **options})
    s_shapes = {key: s.shape for key in list(method.student_taps) + ["out"]}
    t_shapes = {key: t.shape for key in list(method.teacher_taps) + ["out"]}
    method.setup(s_shapes, t_shapes)
    return method


def call(method: DistillMethod, s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> dict:
    """Feed ``s`` / ``t`` under every name the method may read (its taps and ``out``)."""
    student = {key: s for key in list(method.student_taps) + ["out"]}
    teacher = {key: t for key in list(method.teacher_taps) + ["out"]}
    return method(student, teacher, {"mask": mask})


def total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(terms.values())


def mask_2x2() -> torch.Tensor:
    return torch.tensor([MASK_2X2])


# ----------------------------------------------------------------------------- logits_kd
def expected_pixel_kd(
    student: list, teacher: list, t: float, pixels: list[tuple[int, int]]
) -> float:
    """Mean over ``pixels`` of KL(softmax(teacher/T) ‖ softmax(student/T)), times T²."""
    kls = [
        kl(softmax([v / t for v in pixel(teacher, i, j)]),
           softmax([v / t for v in pixel(student, i, j)]))
        for i, j in pixels
    ]
    return sum(kls) / len(kls) * t * t


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_logits_kd_matches_formula_and_scales_with_t_squared(temperature: float) -> None:
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    method = prepared("logits_kd", s, t, temperature=temperature, weight=0.5)
    out = call(method, s, t, mask_2x2())
    labelled = [(0, 0), (0, 1), (1, 0)]
    expected = 0.5 * expected_pixel_kd(STUDENT_2X2, TEACHER_2X2, temperature, labelled)
    assert set(out) == {"kd"}
    assert out["kd"].item() == pytest.approx(expected, rel=1e-5)


def test_logits_kd_skips_ignore_pixels_but_source_exact_does_not() -> None:
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    changed = [[row[:] for row in channel] for channel in STUDENT_2X2]
    changed[0][1][1] += 3.0  # only the ignored pixel moves
    s2, _ = tensors(changed, TEACHER_2X2)
    default = prepared("logits_kd", s, t)
    exact = prepared("logits_kd", s, t, source_exact=True)
    assert call(default, s, t, mask_2x2())["kd"].item() == pytest.approx(
        call(default, s2, t, mask_2x2())["kd"].item(), rel=1e-6
    )
    assert call(exact, s, t, mask_2x2())["kd"].item() != pytest.approx(
        call(exact, s2, t, mask_2x2())["kd"].item(), rel=1e-3
    )


def test_logits_kd_source_exact_value() -> None:
    temperature = 1.9
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    method = prepared("logits_kd", s, t, temperature=temperature, source_exact=True)
    all_pixels = [(0, 0), (0, 1), (1, 0), (1, 1)]
    kl_sum = sum(
        kl(softmax([v / temperature for v in pixel(TEACHER_2X2, i, j)]),
           softmax([v / temperature for v in pixel(STUDENT_2X2, i, j)]))
        for i, j in all_pixels
    )
    n_c_h_w = 1 * 2 * 2 * 2  # the mean runs over classes too
    expected = kl_sum / n_c_h_w * temperature**2 * 19
    assert call(method, s, t, mask_2x2())["kd"].item() == pytest.approx(expected, rel=1e-5)


def test_logits_kd_resizes_mask_to_smaller_logits() -> None:
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    method = prepared("logits_kd", s, t, at="logits", temperature=2.0)
    assert method.student_taps == {"logits": "logits"}
    full_mask = torch.full((1, 4, 4), 255)
    full_mask[0, 0, 0] = 3  # nearest 4×4 → 2×2 keeps rows/cols 0 and 2: pixel (0, 0)
    full_mask[0, 2, 2] = 1  # and pixel (1, 1); every other kept position is ignore
    out = call(method, s, t, full_mask)["kd"].item()
    expected = expected_pixel_kd(STUDENT_2X2, TEACHER_2X2, 2.0, [(0, 0), (1, 1)])
    assert out == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- feature_kd
def test_feature_kd_mse_value() -> None:
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    method = prepared("feature_kd", s, t, at="head", weight=2.0)
    assert method.mapping is None
    squares = [
        (STUDENT_2X2[c][i][j] - TEACHER_2X2[c][i][j]) ** 2
        for c in range(2) for i in range(2) for j in range(2)
    ]
    out = call(method, s, t, mask_2x2())
    assert out["feature_kd"].item() == pytest.approx(2.0 * sum(squares) / 8, rel=1e-6)


def test_feature_kd_source_recipe_aux_vs_teacher_out_smooth_l1() -> None:
    method = build_method(
        {"name": "feature_kd", "student_at": "aux", "teacher_at": "out", "loss": "smooth_l1",
         "mapping": "none"}
    )
    assert method.teacher_taps == {}  # the teacher's final logits are its "out" output
    assert list(method.student_taps.values()) == ["aux"]
    method.setup({}, {})  # nothing to build; output shapes are not needed
    aux_key = next(iter(method.student_taps))
    aux = torch.tensor([[[[0.2]], [[-1.0]]]], requires_grad=True)  # 1×2×1×1, resized to 2×2
    teacher_out = torch.tensor([TEACHER_2X2], requires_grad=True)
    out = method({aux_key: aux}, {"out": teacher_out}, {"mask": mask_2x2()})

    def smooth_l1(d: float) -> float:
        return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5

    values = [
        smooth_l1([0.2, -1.0][c] - TEACHER_2X2[c][i][j])
        for c in range(2) for i in range(2) for j in range(2)
    ]
    assert out["feature_kd"].item() == pytest.approx(sum(values) / 8, rel=1e-6)
    out["feature_kd"].backward()
    assert aux.grad is not None and teacher_out.grad is None


@pytest.mark.parametrize(
    ("mode", "student_channels", "built"),
    [("auto", 2, False), ("auto", 3, True), ("conv_bn", 2, True), ("none", 2, False)],
)
def test_feature_kd_builds_mapping_when_asked_or_channels_differ(
    mode: str, student_channels: int, built: bool
) -> None:
    method = build_method({"name": "feature_kd", "at": "head", "mapping": mode})
    key = next(iter(method.student_taps))
    method.setup({key: torch.Size([1, student_channels, 4, 4])}, {key: torch.Size([1, 2, 4, 4])})
    assert (method.mapping is not None) == built
    if built:
        assert method.mapping[0].in_channels == student_channels
        assert method.mapping[0].out_channels == 2


def test_feature_kd_mapping_none_with_different_channels_is_an_error() -> None:
    method = build_method({"name": "feature_kd", "at": "head", "mapping": "none"})
    key = next(iter(method.student_taps))
    with pytest.raises(ValueError, match="feature_kd.*3 channels.*teacher 2"):
        method.setup({key: torch.Size([1, 3, 4, 4])}, {key: torch.Size([1, 2, 4, 4])})


# ----------------------------------------------------------------------------- cwd
@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_matches_channel_distribution_formula(tau: float) -> None:
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    method = prepared("cwd", s, t, temperature=tau)
    assert method.mapping is None
    per_channel = []
    for c in range(2):
        s_flat = [v / tau for row in STUDENT_2X2[c] for v in row]
        t_flat = [v / tau for row in TEACHER_2X2[c] for v in row]
        per_channel.append(kl(softmax(t_flat), softmax(s_flat)))
    expected = 3.0 * sum(per_channel) / 2 * tau**2  # default weight 3
    assert call(method, s, t, mask_2x2())["cwd"].item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- skd
def expected_affinity_loss(s_nodes: list[list[float]], t_nodes: list[list[float]]) -> float:
    """Mean over node pairs of the squared difference of cosine similarities."""
    n = len(s_nodes)
    squares = [
        (cosine(s_nodes[a], s_nodes[b]) - cosine(t_nodes[a], t_nodes[b])) ** 2
        for a in range(n) for b in range(n)
    ]
    return sum(squares) / (n * n)


def test_skd_without_pooling_compares_pixel_affinities() -> None:
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    method = prepared("skd", s, t, pool_size=1)
    nodes = [(0, 0), (0, 1), (1, 0), (1, 1)]
    expected = expected_affinity_loss(
        [pixel(STUDENT_2X2, i, j) for i, j in nodes], [pixel(TEACHER_2X2, i, j) for i, j in nodes]
    )
    out = call(method, s, t, mask_2x2())["skd_pairwise"].item()
    assert out == pytest.approx(expected, rel=1e-5)


def pooled_nodes(x: torch.Tensor, k: int) -> list[list[float]]:
    """Max over k×k windows, the last ones cut short at the border (ceil mode), row by row."""
    _, channels, h, w = x.shape
    return [
        [x[0, c, a : a + k, b : b + k].max().item() for c in range(channels)]
        for a in range(0, h, k) for b in range(0, w, k)
    ]


@pytest.mark.parametrize("size", [4, 5])
def test_skd_max_pools_nodes_and_pool_scale_matches_the_same_kernel(size: int) -> None:
    torch.manual_seed(0)
    s = torch.randn(1, 3, size, size, requires_grad=True)
    t = torch.randn(1, 3, size, size, requires_grad=True)
    expected = expected_affinity_loss(pooled_nodes(s, 2), pooled_nodes(t, 2))
    by_size = call(prepared("skd", s, t, pool_size=2), s, t, mask_2x2())["skd_pairwise"]
    # the authors' form: kernel = int(0.5 · size), 2 for both sizes
    by_scale = call(prepared("skd", s, t, pool_scale=0.5), s, t, mask_2x2())["skd_pairwise"]
    assert by_size.item() == pytest.approx(expected, rel=1e-5)
    assert by_scale.item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- ifvd
def expected_ifv(student: list, teacher: list, mask: list, labelled_only: bool = False) -> float:
    """Sum of squared IFV differences over labelled pixels / (labelled or all 4 pixels)."""
    def ifv_map(x: list) -> dict[tuple[int, int], float]:
        labelled = [(i, j) for i in range(2) for j in range(2) if mask[i][j] != 255]
        cos = {}
        for i, j in labelled:
            members = [pixel(x, a, b) for a, b in labelled if mask[a][b] == mask[i][j]]
            prototype = [sum(v[c] for v in members) / len(members) for c in range(len(x))]
            cos[(i, j)] = cosine(pixel(x, i, j), prototype)
        return cos

    s_map, t_map = ifv_map(student), ifv_map(teacher)
    return sum((s_map[k] - t_map[k]) ** 2 for k in s_map) / (len(s_map) if labelled_only else 4)


@pytest.mark.parametrize("mean_over", ["all", "labelled"])
def test_ifvd_matches_prototype_cosine_formula(mean_over: str) -> None:
    mask = [[0, 0], [1, 255]]
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    method = prepared("ifvd", s, t, weight=10.0, mean_over=mean_over)
    out = call(method, s, t, torch.tensor([mask]))["ifvd"].item()
    expected = expected_ifv(STUDENT_2X2, TEACHER_2X2, mask, labelled_only=mean_over == "labelled")
    assert out == pytest.approx(10.0 * expected, rel=1e-5)
    assert out > 0


def test_ifvd_default_is_the_authors_mean_over_every_pixel() -> None:
    # the authors' code: an ignored pixel's "prototype" is its own feature, cos 1 for both
    # models, so it adds 0 to the MSE over all B·h·w pixels: 3 labelled of 4 → 3/4 of the mean
    mask = [[0, 0], [1, 255]]
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    every = call(prepared("ifvd", s, t), s, t, torch.tensor([mask]))["ifvd"].item()
    labelled = call(prepared("ifvd", s, t, mean_over="labelled"), s, t, torch.tensor([mask]))["ifvd"].item()
    assert every == pytest.approx(labelled * 3 / 4, rel=1e-6)


def test_ifvd_ignores_ignore_pixels_and_downsamples_the_mask() -> None:
    mask = [[0, 1], [1, 255]]
    full_mask = torch.tensor([mask]).repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # 4×4
    s, t = tensors(STUDENT_2X2, TEACHER_2X2)
    changed = [[row[:] for row in channel] for channel in STUDENT_2X2]
    changed[1][1][1] = -4.0  # the ignored pixel
    s2, _ = tensors(changed, TEACHER_2X2)
    method = prepared("ifvd", s, t)
    first = call(method, s, t, full_mask)["ifvd"].item()
    assert first == pytest.approx(200.0 * expected_ifv(STUDENT_2X2, TEACHER_2X2, mask), rel=1e-5)
    assert call(method, s2, t, full_mask)["ifvd"].item() == pytest.approx(first, rel=1e-6)


@pytest.mark.parametrize(("mode", "built"), [("none", False), ("auto", True)])
def test_ifvd_mapping_only_when_asked(mode: str, built: bool) -> None:
    method = build_method({"name": "ifvd", "mapping": mode})
    key = next(iter(method.student_taps))
    method.setup({key: torch.Size([1, 3, 2, 2])}, {key: torch.Size([1, 2, 2, 2])})
    assert (method.mapping is not None) == built


# ----------------------------------------------------------------------------- dist
# 3 classes × 1 row × 3 pixels
STUDENT_1X3 = [[[0.5, -1.0, 2.0]], [[1.5, 0.3, -0.7]], [[0.0, 1.2, 0.4]]]
TEACHER_1X3 = [[[1.0, 0.2, 0.1]], [[-0.5, 0.8, 1.1]], [[2.5, -0.4, 0.9]]]


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_dist_inter_and_intra_relations(tau: float) -> None:
    s, t = tensors(STUDENT_1X3, TEACHER_1X3)
    method = prepared("dist", s, t, temperature=tau, inter_weight=2.0, intra_weight=0.5)
    p_s = [softmax([v / tau for v in pixel(STUDENT_1X3, 0, j)]) for j in range(3)]  # per pixel
    p_t = [softmax([v / tau for v in pixel(TEACHER_1X3, 0, j)]) for j in range(3)]
    inter = 1 - sum(pearson(p_s[n], p_t[n]) for n in range(3)) / 3
    intra = 1 - sum(
        pearson([p_s[n][c] for n in range(3)], [p_t[n][c] for n in range(3)]) for c in range(3)
    ) / 3
    out = call(method, s, t, torch.zeros(1, 1, 3, dtype=torch.long))
    assert set(out) == {"dist_inter", "dist_intra"}
    assert out["dist_inter"].item() == pytest.approx(2.0 * inter * tau**2, rel=1e-5)
    assert out["dist_intra"].item() == pytest.approx(0.5 * intra * tau**2, rel=1e-5)


def test_dist_aux_weight_adds_aux_taps_and_term() -> None:
    method = build_method({"name": "dist", "aux_weight": 0.4})
    assert sorted(method.student_taps.values()) == ["aux", "logits"]
    s, t = tensors(STUDENT_1X3, TEACHER_1X3)
    out = call(method, s, t, torch.zeros(1, 1, 3, dtype=torch.long))
    main = out["dist_inter"] + out["dist_intra"]
    assert out["dist_aux"].item() == pytest.approx(0.4 * main.item(), rel=1e-5)  # same inputs


# ----------------------------------------------------------------------------- cirkd
# 2 images × 2 channels × 1 row × 2 pixels
CIRKD_STUDENT = [[[[0.5, -1.0]], [[1.5, 0.3]]], [[[2.0, 0.0]], [[-0.7, 1.2]]]]
CIRKD_TEACHER = [[[[1.0, 0.2]], [[-0.5, 0.8]]], [[[0.1, -0.4]], [[1.1, 2.5]]]]


def image_pixels(x: list, b: int) -> list[list[float]]:
    return [unit(pixel(x[b], 0, j)) for j in range(2)]


def test_cirkd_in_batch_pixel_relations() -> None:
    tau = 0.5
    s = torch.tensor(CIRKD_STUDENT, requires_grad=True)
    t = torch.tensor(CIRKD_TEACHER, requires_grad=True)
    method = prepared("cirkd", s, t, temperature=tau, projection="none", pixel_memory_size=4,
                      region_memory_size=2)
    pair_values = []
    for i in range(2):
        for j in range(2):
            rows = [
                kl(softmax([cosine(ti, tj) / tau for tj in image_pixels(CIRKD_TEACHER, j)]),
                   softmax([cosine(si, sj) / tau for sj in image_pixels(CIRKD_STUDENT, j)]))
                for si, ti in zip(image_pixels(CIRKD_STUDENT, i), image_pixels(CIRKD_TEACHER, i))
            ]
            pair_values.append(sum(rows) / len(rows))
    out = call(method, s, t, torch.zeros(2, 1, 2, dtype=torch.long))
    assert set(out) == {"cirkd_batch", "cirkd_pixel_memory", "cirkd_region_memory"}
    assert out["cirkd_batch"].item() == pytest.approx(sum(pair_values) / 4, rel=1e-5)


@pytest.mark.parametrize(
    ("mode", "student_channels", "built"),
    [("always", 2, True), ("auto", 2, False), ("auto", 3, True), ("none", 2, False)],
)
def test_cirkd_projection_head(mode: str, student_channels: int, built: bool) -> None:
    method = build_method({"name": "cirkd", "projection": mode})
    key = next(iter(method.student_taps))
    teacher = {key: torch.Size([1, 2, 2, 2]), "out": torch.Size([1, 2, 8, 8])}
    method.setup({key: torch.Size([1, student_channels, 2, 2])}, teacher)
    assert (method.projection is not None) == built
    # one queue per class (the teacher's 2 output channels here) of the reference's sizes
    assert method.memory.pixels.shape == (2, 20000, 2)
    assert method.memory.regions.shape == (2, 2000, 2)


# ----------------------------------------------------------------------------- all methods
def random_pair(
    name: str, student_channels: int
) -> tuple[DistillMethod, torch.Tensor, torch.Tensor]:
    """A prepared method with random 2×C×4×4 student / 2×3×4×4 teacher tensors."""
    torch.manual_seed(1)
    options = {"feature_kd": {"at": "head"}, "cwd": {}, "ifvd": {"mapping": "auto"}}.get(name, {})
    s = torch.randn(2, student_channels, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, requires_grad=True)
    return prepared(name, s, t, **options), s, t


def random_mask() -> torch.Tensor:
    mask = torch.tensor([[0, 1, 2, 255]]).repeat(2, 4, 1)
    return mask.reshape(2, 4, 4)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_gradient_reaches_student_and_mapping_never_teacher(name: str) -> None:
    channels = 3 if name in ("logits_kd", "dist", "skd") else 5  # mappings appear where possible
    method, s, t = random_pair(name, channels)
    terms = call(method, s, t, random_mask())
    loss = total(terms)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    learnable = list(method.parameters())
    # SKD's critic steps its own optimiser inside forward: not among the parameters a trainer takes
    assert (len(learnable) > 0) == (name in ("feature_kd", "cwd", "ifvd", "cirkd"))
    for parameter in learnable:
        assert parameter.grad is not None, f"{name}: a learnable part got no gradient"
    if name == "skd":
        assert all(p.grad is None for p in method.critic.parameters())  # stepped and cleared already


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_losses_are_float32_under_autocast(name: str) -> None:
    method, s, t = random_pair(name, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = call(method, s, t, random_mask())
    assert all(v.dtype == torch.float32 for v in terms.values()), terms


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_unknown_option_is_named(name: str) -> None:
    with pytest.raises(ValueError, match=rf"method '{name}' has no option\(s\) \['temprature'\]"):
        build_method({"name": name, "temprature": 2.0})


@pytest.mark.parametrize(
    ("spec", "option"),
    [
        ({"name": "feature_kd", "loss": "l3"}, "loss"),
        ({"name": "cwd", "mapping": "linear"}, "mapping"),
        ({"name": "logits_kd", "at": "aux"}, "at"),
        ({"name": "cirkd", "projection": "mlp"}, "projection"),
    ],
)
def test_bad_choice_names_the_option(spec: dict, option: str) -> None:
    with pytest.raises(ValueError, match=f"option '{option}' must be one of"):
        build_method(spec)


def test_setup_error_names_missing_tap() -> None:
    method = build_method({"name": "cwd"})
    with pytest.raises(KeyError, match="method 'cwd': student shapes have no entry"):
        method.setup({}, {})


def test_logits_kd_on_binary_logits_is_the_bernoulli_kl():
    from segkd.distill.logits_kd import LogitsKD

    s = torch.tensor([[[[0.5, -1.0]]]])
    t = torch.tensor([[[[2.0, 0.0]]]])
    T = 2.0
    expected = 0.0
    for zs, zt in ((0.5, 2.0), (-1.0, 0.0)):
        ps, pt = 1 / (1 + math.exp(-zs / T)), 1 / (1 + math.exp(-zt / T))
        expected += pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    expected = expected / 2 * T * T
    out = LogitsKD(temperature=T, at="out")({"out": s}, {"out": t}, {"mask": torch.zeros(1, 1, 1, 2)})
    assert out["kd"].item() == pytest.approx(expected, rel=1e-6)
