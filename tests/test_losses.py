"""Every linear-memory form checked against its dense N × N definition on small N."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from scipy.spatial.distance import jensenshannon

from scsc.components.cluster import sinkhorn_plan, student_t
from scsc.losses import (
    adjacency_loss,
    cross_correlation_feature,
    cross_correlation_sample,
    js_divergence,
    soft_readout,
    zinb_nll,
    zinb_nll_chunked,
)


@pytest.fixture(autouse=True)
def _float64_inside_these_tests():
    # Exact comparisons need float64; restore the default so no other test sees it.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def dense_sample_loss(u, v):
    u, v = F.normalize(u, dim=1), F.normalize(v, dim=1)
    s = u @ v.T
    n = s.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    return ((s[eye] - 1) ** 2).mean() + (s[~eye] ** 2).mean()


def test_sample_cross_correlation_matches_dense():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(57, 20, generator=g), torch.randn(57, 20, generator=g)
    assert torch.allclose(cross_correlation_sample(u, v), dense_sample_loss(u, v), atol=1e-10)
    # Perfectly aligned orthogonal rows reach the minimum 0.
    eye = torch.eye(20)
    assert cross_correlation_sample(eye, eye).item() == pytest.approx(0.0, abs=1e-12)


def test_sample_cross_correlation_gradient_matches_dense():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(30, 8, generator=g, requires_grad=True)
    v = torch.randn(30, 8, generator=g)
    (gf,) = torch.autograd.grad(cross_correlation_sample(u, v), u)
    (gd,) = torch.autograd.grad(dense_sample_loss(u, v), u)
    assert torch.allclose(gf, gd, atol=1e-10)


def test_feature_readout_is_row_order_independent():
    g = torch.Generator().manual_seed(2)
    u, v = torch.randn(100, 20, generator=g), torch.randn(100, 20, generator=g)
    q = torch.softmax(torch.randn(100, 6, generator=g), dim=1)
    perm = torch.randperm(100, generator=g)
    a = cross_correlation_feature(u, v, q)
    b = cross_correlation_feature(u[perm], v[perm], q[perm])
    assert torch.allclose(a, b, atol=1e-12)
    # Readout = weighted cluster means: equals a dense loop.
    r = soft_readout(u, q)
    for k in range(6):
        w = q[:, k] / q[:, k].sum()
        assert torch.allclose(r[k], (w[:, None] * u).sum(0))


def test_attention_without_nxn_matches_dense():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(200, 20, generator=g, dtype=torch.float32)
    dense = torch.softmax(z @ z.T, dim=1) @ z
    q = z[None, None]
    fast = F.scaled_dot_product_attention(q, q, q, scale=1.0)[0, 0]
    assert torch.allclose(fast, dense, atol=1e-4)


def test_adjacency_loss_is_unbiased_estimate_of_dense_mean():
    g = torch.Generator().manual_seed(4)
    n = 80
    z = torch.randn(n, 5, generator=g) * 0.7
    a = (torch.rand(n, n, generator=g) < 0.08).double()
    a = ((a + a.T + torch.eye(n)) > 0).double()
    a = a / a.sum(1, keepdim=True)
    dense = ((torch.sigmoid(z @ z.T) - a) ** 2).mean()
    idx = a.nonzero().T
    w = a[idx[0], idx[1]]
    est = torch.stack([adjacency_loss(z, idx, w, n_negatives=20, generator=g) for _ in range(50)]).mean()
    assert est.item() == pytest.approx(dense.item(), rel=0.01)


def test_js_divergence_is_symmetric_jensen_shannon():
    g = torch.Generator().manual_seed(5)
    h, ah = torch.randn(40, 7, generator=g), torch.randn(40, 7, generator=g)
    p, q = torch.softmax(ah, 1).numpy(), torch.softmax(h, 1).numpy()
    expected = np.mean([jensenshannon(p[i], q[i]) ** 2 for i in range(40)])
    assert js_divergence(h, ah).item() == pytest.approx(expected, rel=1e-6)
    assert js_divergence(h, ah).item() == pytest.approx(js_divergence(ah, h).item(), rel=1e-10)


def test_zinb_matches_scipy_and_passes_gradient_to_mean():
    g = torch.Generator().manual_seed(6)
    n, genes = 20, 15
    mean = (torch.rand(n, genes, generator=g) * 5 + 0.1).requires_grad_(True)
    disp = torch.rand(n, genes, generator=g) * 3 + 0.2
    pi = torch.rand(n, genes, generator=g) * 0.5
    sf = torch.rand(n, generator=g) + 0.5
    counts = torch.poisson(mean.detach() * sf[:, None], generator=g)
    mu = (mean.detach() * sf[:, None]).numpy()
    th, p0, c = disp.numpy(), pi.numpy(), counts.numpy()
    nb = stats.nbinom.pmf(c, th, th / (th + mu))
    lik = np.where(c == 0, p0 + (1 - p0) * nb, (1 - p0) * nb)
    expected = -np.log(lik).mean()
    got = zinb_nll(counts, mean, disp, pi, sf)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0


def test_chunked_zinb_equals_the_whole_likelihood_in_value_and_gradient():
    torch.manual_seed(7)
    head = torch.nn.Linear(8, 3 * 30)

    def params(h):
        m, d, p = head(h).split(30, dim=1)
        return torch.exp(m).clamp(1e-5, 1e6), F.softplus(d) + 1e-4, torch.sigmoid(p)

    hidden = torch.randn(101, 8, requires_grad=True)
    counts = torch.poisson(torch.rand(101, 30) * 3)
    sf = torch.rand(101) + 0.5
    whole = zinb_nll(counts, *params(hidden), sf)
    whole.backward()
    expected = [w.grad.clone() for w in (*head.parameters(), hidden)]
    head.zero_grad()
    hidden.grad = None
    chunked = zinb_nll_chunked(params, hidden, counts, sf, chunk=16)  # 7 chunks, the last one short
    chunked.backward()
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
    for got, want in zip([w.grad for w in (*head.parameters(), hidden)], expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        assert zinb_nll_chunked(params, hidden, counts, sf, chunk=16).item() == pytest.approx(
            whole.item(), rel=1e-6
        )


def test_sinkhorn_plan_meets_marginals_and_survives_degenerate_q():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(4), size=300)
    props = np.array([0.1, 0.2, 0.3, 0.4])
    plan = sinkhorn_plan(q, props, lam=5.0, n_iter=1000, tol=1e-9)
    assert np.allclose(plan.sum(1), 1.0)
    assert np.allclose(plan.mean(0), props, atol=1e-3)
    # Underflowing Q (one-hot rows, exact zeros) and an empty cluster must not give NaN.
    hard = np.zeros((50, 3))
    hard[np.arange(50), rng.integers(0, 2, 50)] = 1.0  # cluster 2 is empty
    plan = sinkhorn_plan(hard, np.array([0.3, 0.3, 0.4]), lam=5.0, n_iter=1000, tol=1e-9)
    assert np.isfinite(plan).all() and np.allclose(plan.sum(1), 1.0)
    # Extreme sharpness where the plain solver underflows.
    plan = sinkhorn_plan(q**40 / (q**40).sum(1, keepdims=True), props, lam=50.0, n_iter=500, tol=1e-9)
    assert np.isfinite(plan).all() and np.allclose(plan.sum(1), 1.0)


def test_student_t_matches_definition():
    g = torch.Generator().manual_seed(7)
    z, mu = torch.randn(30, 4, generator=g), torch.randn(5, 4, generator=g)
    q = student_t(z, mu)
    d2 = ((z[:, None, :] - mu[None]) ** 2).sum(-1)
    expected = 1 / (1 + d2)
    expected = expected / expected.sum(1, keepdim=True)
    assert torch.allclose(q, expected, atol=1e-10)
