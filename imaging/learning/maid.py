r"""MAID, the method of adaptive inexact descent for bilevel learning (Salehi, Mukherjee, Roberts, Ehrhardt), and a
HOAG-style baseline with a-priori accuracy schedules.

    min_θ f(θ) = g(x̂(θ)),    x̂(θ) = argmin_x h(x, θ)    (h μ-strongly convex and smooth in x)

Hypergradient by implicit differentiation: ∇f(θ) = −J ᵀ H⁻¹ ∇g(x̂), H = ∇²_xx h, J = ∇²_xθ h. MAID computes it
inexactly: the lower level to ‖∇_x h(x̃)‖/μ ≤ ε (so ‖x̃ − x̂‖ ≤ ε), CG on H q = ∇g(x̃) to residual ≤ δ, and
z = −J(x̃)ᵀ q (a vector-Jacobian product by autograd). Its error is bounded a posteriori by

    ω = c ε + (‖J‖/μ) δ + (L_J L_g/μ) ε²,    c = L_g‖J‖/μ + L_H⁻¹ ‖∇g(x̃)‖ ‖J‖ + L_J ‖∇g(x̃)‖/μ

(L_g: Lipschitz constant of ∇g; L_H⁻¹, L_J: of H⁻¹ and J in x, zero for quadratics). While ω > (1 − η)‖z‖ the
accuracies shrink (ε, δ ← τ ε, τ δ), so that z is a descent direction; then a backtracking line search on the
certified bounds of f accepts θ⁺ = θ − a z when
    g(x⁺) + ‖∇g(x⁺)‖ε + L_g ε²/2 − (g(x̃) − ‖∇g(x̃)‖ε) ≤ −a η² ‖z‖²
(upper bound of f(θ⁺) minus lower bound of f(θ), g convex). On success the accuracies relax (× ν) and the step grows
(× 10/9); after a failed search the accuracies tighten (× τ). The budget counts lower-level and CG iterations.

A problem is any `BilevelProblem`: it provides h's value, x-gradient (differentiable in θ), Hessian-vector product
and μ, the upper loss g and its gradient, and the constants of the bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from imaging import linalg
from imaging.learning.lower_level import accelerated_gradient
from imaging.solvers.base import IterativeSolver, Result, check_option


class BilevelProblem:
    """Interface of a bilevel problem for `maid` / `hoag`. x: (B, ...) batched lower-level variables, θ: a tensor.

    Implement `lower_value`, `lower_grad` (differentiable in θ through autograd), `lower_hvp`, `upper`,
    `upper_grad`, and set `mu` (strong convexity of h in x), `upper_lipschitz` (L_g), and the bound constants
    `jacobian_norm(x, θ)` (an upper bound of ‖J‖), `hessian_inverse_lipschitz` and `jacobian_lipschitz` (0 for
    quadratics)."""

    mu: float = 1.0
    upper_lipschitz: float = 1.0
    hessian_inverse_lipschitz: float = 0.0
    jacobian_lipschitz: float = 0.0
    upper_convex: bool = True

    def lower_value(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def lower_grad(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def lower_hvp(self, x: torch.Tensor, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def upper(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def upper_grad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def jacobian_norm(self, x: torch.Tensor, theta: torch.Tensor) -> float:
        raise NotImplementedError

    def initial_x(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _Lower:
    """h(·, θ) in the form `accelerated_gradient` takes."""

    def __init__(self, problem: BilevelProblem, theta: torch.Tensor) -> None:
        self.problem, self.theta, self.mu = problem, theta, problem.mu

    def value(self, x):
        return self.problem.lower_value(x, self.theta)

    def grad(self, x):
        return self.problem.lower_grad(x, self.theta)

    def initial(self):
        return self.problem.initial_x(self.theta)


def solve_lower(problem: BilevelProblem, theta: torch.Tensor, x0: torch.Tensor, eps: float, max_iter: int = 2000):
    """The lower level to ‖x̃ − x̂‖ ≤ ε over the whole batch (each of the B samples to ε/√B)."""
    return accelerated_gradient(_Lower(problem, theta), eps / x0.shape[0] ** 0.5, x0, max_iter=max_iter)


def conjugate_gradient(hvp, rhs: torch.Tensor, x0: torch.Tensor, tol: float, max_iter: int
                       ) -> tuple[torch.Tensor, int]:
    """Solve H q = rhs (H symmetric positive definite, given by hvp; the whole batch one system) to ‖residual‖ ≤ tol
    (absolute) by the library's conjugate gradient; returns (q, applications of H, at most max_iter)."""
    result = linalg.conjugate_gradient(lambda v: hvp(v[0])[None], rhs[None], x0[None], tol=0.0, atol=tol,
                                       max_iter=max(max_iter - 1, 0))
    return result.x[0], result.matvecs


@dataclass
class Hypergradient:
    """z ≈ ∇f(θ) with its a-posteriori error bound ω and the work it took."""

    z: torch.Tensor
    bound: float
    x: torch.Tensor
    q: torch.Tensor
    cost: int


def hypergradient(problem: BilevelProblem, theta: torch.Tensor, x0: torch.Tensor, eps: float, delta: float,
                  q0: torch.Tensor | None = None, max_lower: int = 2000, max_cg: int = 2000) -> Hypergradient:
    """The inexact hypergradient at θ from the warm starts x0 (lower level) and q0 (CG), with its bound ω."""
    with torch.no_grad():
        lower = solve_lower(problem, theta, x0, eps, max_lower)
        x = lower.x
        grad_g = problem.upper_grad(x)
        q, cg_iterations = conjugate_gradient(lambda v: problem.lower_hvp(x, theta, v), grad_g,
                                              torch.zeros_like(grad_g) if q0 is None else q0, delta, max_cg)
    with torch.enable_grad():
        theta_ = theta.detach().requires_grad_()
        z = -torch.autograd.grad((problem.lower_grad(x, theta_) * q).sum(), theta_)[0]
    mu, L_g = problem.mu, problem.upper_lipschitz
    J = problem.jacobian_norm(x, theta)
    g_norm = float(torch.linalg.vector_norm(grad_g))
    c = L_g * J / mu + problem.hessian_inverse_lipschitz * g_norm * J + problem.jacobian_lipschitz * g_norm / mu
    bound = c * eps + J / mu * delta + problem.jacobian_lipschitz * L_g / mu * eps ** 2
    return Hypergradient(z.detach(), bound, x, q, lower.evaluations + cg_iterations)


@dataclass
class BilevelResult(Result):
    """The library's `Result` of bilevel learning: θ, x the lower-level solution at θ, and the history: the upper
    loss, the cumulated lower-level + CG iterations (`cost`), ε, δ and the step size, first at θ0 and then per
    accepted step, with θ itself in `thetas` (θ0 first); `iterations`, and `converged` when stationarity was
    certified (MAID) — HOAG has no certificate and runs its schedule."""

    theta: torch.Tensor | None = None
    thetas: list[torch.Tensor] = field(default_factory=list)  # θ after each accepted step (θ0 first)


def check_theta(problem: BilevelProblem, theta0: object, who: str) -> None:
    """A clear error unless θ0 is a finite 1-D tensor of the problem's length (when it declares
    `parameter_count`)."""
    if not isinstance(theta0, torch.Tensor) or theta0.dim() != 1 or not bool(torch.isfinite(theta0).all()):
        raise ValueError(f"{who}: argument 'theta0' must be a finite 1-D tensor, got "
                         f"{tuple(theta0.shape) if isinstance(theta0, torch.Tensor) else type(theta0).__name__}")
    count = getattr(problem, "parameter_count", None)
    if count is not None and theta0.numel() != count:
        raise ValueError(f"{who}: argument 'theta0' must have {count} entries (the problem's learnable parameters), "
                         f"got {theta0.numel()}")


class MAID(IterativeSolver):
    """MAID on the library's loop: one iteration is one accepted step (after its accuracy refinements and line
    search); residual = ‖z‖ + ω, the certified bound on ‖∇f(θ)‖, converged when ≤ tol. See `maid`."""

    name = "MAID"

    def __init__(self, problem: BilevelProblem, theta0: torch.Tensor, *, eps0: float = 1e-1, delta0: float = 1e-1,
                 step0: float = 1e-1, eta: float = 1e-4, shrink: float = 0.5, backtrack: float = 0.5,
                 relax: float = 1.05, step_growth: float = 10 / 9, max_iter: int = 100, budget: int = 10 ** 6,
                 max_backtracks: int = 10, max_refinements: int = 30, tol: float = 1e-8, progress: bool = False,
                 callback=None) -> None:
        check_theta(problem, theta0, "maid")
        self.owner = "maid"
        super().__init__(max_iter=max_iter, tol=tol, progress=progress, callback=callback)
        self.problem, self.theta0 = problem, theta0.detach().clone()
        for name, value in (("eps0", eps0), ("delta0", delta0), ("step0", step0)):
            check_option(value, "maid", name, positive=True)
        self.eps0, self.delta0, self.step0, self.eta, self.shrink = eps0, delta0, step0, eta, shrink
        self.backtrack, self.relax, self.step_growth, self.budget = backtrack, relax, step_growth, budget
        self.max_backtracks, self.max_refinements = max_backtracks, max_refinements

    def init(self, x0: torch.Tensor | None) -> dict:
        theta = self.theta0.clone()
        x = self.problem.initial_x(theta) if x0 is None else x0
        upper = float(self.problem.upper(solve_lower(self.problem, theta, x, self.eps0).x))
        return {"theta": theta, "x": x, "q": None, "cost": 0, "eps": self.eps0, "delta": self.delta0,
                "step": self.step0, "thetas": [theta.clone()], "stop": None,
                "start": {"upper": upper, "cost": 0.0, "eps": self.eps0, "delta": self.delta0, "step": self.step0}}

    def initial_metrics(self, state: dict) -> dict:
        return state["start"]

    def step(self, state: dict):
        problem, eta, shrink = self.problem, self.eta, self.shrink
        theta, x, q, cost, eps, delta, step = (state[k] for k in ("theta", "x", "q", "cost", "eps", "delta", "step"))
        accepted = False
        for attempt in range(self.max_backtracks):
            for _refine in range(self.max_refinements):  # accuracy refinement until z is a certified descent direction
                hyper = hypergradient(problem, theta, x, eps, delta, q)
                cost += hyper.cost
                z_norm = float(torch.linalg.vector_norm(hyper.z))
                if hyper.bound <= (1 - eta) * z_norm or z_norm + hyper.bound <= self.tol:
                    break
                eps, delta = eps * shrink, delta * shrink
            x, q = hyper.x, hyper.q
            if z_norm + hyper.bound <= self.tol:
                break
            g_here = float(problem.upper(x))
            lower_bound = g_here - float(torch.linalg.vector_norm(problem.upper_grad(x))) * eps
            for i in range(self.max_backtracks + attempt):
                a = step * self.backtrack ** i
                candidate = theta - a * hyper.z
                solved = solve_lower(problem, candidate, x, eps)
                cost += solved.evaluations
                g_new = float(problem.upper(solved.x))
                upper_bound = g_new + float(torch.linalg.vector_norm(problem.upper_grad(solved.x))) * eps \
                    + problem.upper_lipschitz * eps ** 2 / 2
                if upper_bound - lower_bound <= -a * eta ** 2 * z_norm ** 2:
                    theta, x, step, accepted = candidate, solved.x, a, True
                    break
            if accepted or cost >= self.budget:
                break
            eps, delta = eps * shrink, delta * shrink  # failed line search: more accuracy, then retry
        metrics = {"residual": z_norm + hyper.bound}
        if accepted:
            eps, delta, step = eps * self.relax, delta * self.relax, step * self.step_growth
            metrics.update(upper=g_new, cost=float(cost), eps=eps, delta=delta, step=step)
            state["thetas"].append(theta.clone())
        state.update(theta=theta, x=x, q=q, cost=cost, eps=eps, delta=delta, step=step)
        if cost >= self.budget:
            state["stop"] = f"the budget of {self.budget} lower-level + CG iterations is spent"
        elif not accepted and metrics["residual"] > self.tol:
            state["stop"] = (f"no step was accepted after {self.max_backtracks} line searches (certified "
                             f"‖∇f‖ bound {metrics['residual']:.3g} > tol {self.tol:g})")
        return state, metrics

    def should_stop(self, state: dict) -> str | None:
        return state["stop"]

    def estimate(self, state: dict) -> torch.Tensor:
        return state["x"]

    def finish(self, result: Result, state: dict) -> BilevelResult:
        return BilevelResult(x=result.x, history=result.history, iterations=result.iterations,
                             converged=result.converged, theta=state["theta"], thetas=state["thetas"])


class HOAG(IterativeSolver):
    """The HOAG-style baseline on the library's loop (see `hoag`); no stationarity certificate: it runs max_iter
    steps or until the budget is spent, and reports converged=True when its schedule is done."""

    name = "HOAG"
    SCHEDULES = ("geometric", "quadratic", "cubic")

    def __init__(self, problem: BilevelProblem, theta0: torch.Tensor, *, eps0: float = 1e-1,
                 schedule: str = "geometric", step0: float = 1e-1, max_iter: int = 100, budget: int = 10 ** 6,
                 progress: bool = False, callback=None) -> None:
        if schedule not in self.SCHEDULES:
            raise ValueError(f"hoag: argument 'schedule' must be one of {sorted(self.SCHEDULES)}, got {schedule!r}")
        check_theta(problem, theta0, "hoag")
        self.owner = "hoag"
        super().__init__(max_iter=max_iter, tol=0.0, progress=progress, callback=callback)
        self.name = f"HOAG ({schedule})"
        self.problem, self.theta0, self.eps0, self.schedule = problem, theta0.detach().clone(), eps0, schedule
        self.step0, self.budget = step0, budget

    def accuracy(self, k: int) -> float:
        """ε_k = δ_k: ε0·0.9^k, ε0/(k+1)² or ε0/(k+1)³."""
        return {"geometric": self.eps0 * 0.9 ** k, "quadratic": self.eps0 / (k + 1) ** 2,
                "cubic": self.eps0 / (k + 1) ** 3}[self.schedule]

    def init(self, x0: torch.Tensor | None) -> dict:
        theta = self.theta0.clone()
        return {"theta": theta, "x": self.problem.initial_x(theta) if x0 is None else x0, "q": None, "cost": 0,
                "L": 1 / self.step0, "previous": None, "k": 0, "thetas": []}

    def step(self, state: dict):
        eps = self.accuracy(state["k"])
        hyper = hypergradient(self.problem, state["theta"], state["x"], eps, eps, state["q"])
        state["cost"] += hyper.cost
        loss = float(self.problem.upper(hyper.x))
        metrics = {"upper": loss, "cost": float(state["cost"]), "eps": eps, "delta": eps, "step": 1 / state["L"]}
        state["thetas"].append(state["theta"].clone())
        if state["previous"] is not None:
            state["L"] = state["L"] * 2 if loss > 1.2 * state["previous"] else state["L"] * 0.95
        state.update(x=hyper.x, q=hyper.q, previous=loss, k=state["k"] + 1, theta=state["theta"] - hyper.z / state["L"])
        return state, metrics

    def should_stop(self, state: dict) -> str | None:
        # the budget ends HOAG's schedule early; final_check reports the schedule as done (no certificate to miss)
        return f"the budget of {self.budget} iterations is spent" if state["cost"] >= self.budget else None

    def final_check(self, state: dict, metrics: dict) -> tuple[bool, str]:
        return True, ""

    def estimate(self, state: dict) -> torch.Tensor:
        return state["x"]

    def finish(self, result: Result, state: dict) -> BilevelResult:
        return BilevelResult(x=result.x, history=result.history, iterations=result.iterations,
                             converged=result.converged, theta=state["theta"], thetas=state["thetas"])


def maid(problem: BilevelProblem, theta0: torch.Tensor, *, eps0: float = 1e-1, delta0: float = 1e-1,
         step0: float = 1e-1, eta: float = 1e-4, shrink: float = 0.5, backtrack: float = 0.5, relax: float = 1.05,
         step_growth: float = 10 / 9, max_iter: int = 100, budget: int = 10 ** 6, max_backtracks: int = 10,
         max_refinements: int = 30, tol: float = 1e-8, progress: bool = False, callback=None) -> BilevelResult:
    """MAID from θ0: returns the last accepted θ and the history (see the module docstring for the rules). Stops
    after max_iter accepted steps, when the budget of lower-level + CG iterations is spent, or when stationarity is
    certified: ‖∇f(θ)‖ ≤ ‖z‖ + ω ≤ tol (`converged`; otherwise a `ConvergenceWarning` says why it stopped)."""
    return MAID(problem, theta0, eps0=eps0, delta0=delta0, step0=step0, eta=eta, shrink=shrink, backtrack=backtrack,
                relax=relax, step_growth=step_growth, max_iter=max_iter, budget=budget, max_backtracks=max_backtracks,
                max_refinements=max_refinements, tol=tol, progress=progress, callback=callback).run()


def hoag(problem: BilevelProblem, theta0: torch.Tensor, *, eps0: float = 1e-1, schedule: str = "geometric",
         step0: float = 1e-1, max_iter: int = 100, budget: int = 10 ** 6, progress: bool = False,
         callback=None) -> BilevelResult:
    """HOAG-style baseline (Pedregosa 2016): accuracies from an a-priori schedule ε_k = δ_k ("geometric": ε0·0.9^k,
    "quadratic": ε0/(k+1)², "cubic": ε0/(k+1)³), step 1/L with L × 0.95 after a decrease and × 2 after an
    increase of the upper loss by more than 20 %."""
    solver = HOAG(problem, theta0, eps0=eps0, schedule=schedule, step0=step0, max_iter=max_iter, budget=budget,
                  progress=progress, callback=callback)
    return solver.run()
