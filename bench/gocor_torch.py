#!/usr/bin/env python3
"""A straightforward PyTorch implementation of the spec's global GOCor module (spec section 4),
written for gocor's benchmark as the stand-in for the official module: same operations in the
same order (initializer 4.2, maps 4.3, K steepest-descent iterations 4.5 with the query term R_theta
as two 3x3 convolutions and their transposes, output 4.6), float32, CPU, one thread.

  /usr/bin/python3 bench/gocor_torch.py H W C K REPS
prints one JSON line {"op":"gocor_global_torch",...,"ms": median process CPU time of REPS calls,
"wall_ms": median wall time}. With `--check FILE` (bench/api.js --check writes FILE) it computes
gocor's own inputs and parameters and prints the largest difference from gocor's volume.
Debian's python3-torch (apt-get install -y python3-torch); not used by any test.
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)

# Initial values of the three functions of distance (spec 3.2), 10 bins of 0.5 px.
BINS, DELTA = 10, 0.5
THETA_Y = [math.exp(-(DELTA * k) ** 2 / 2) - math.exp(-4.5 ** 2 / 2) for k in range(BINS)]
THETA_Y[-1] = 0.0
THETA_V = [1.0] * BINS
THETA_M = [4.0 * math.tanh(2.0 - DELTA * k) for k in range(BINS)]


def bin_weights(d):
    u = d / DELTA
    ks = torch.arange(BINS - 1, dtype=torch.float32)
    hats = torch.clamp(1 - (u[..., None] - ks).abs(), min=0)
    ramp = torch.clamp(1 + (u - (BINS - 1)), 0, 1)[..., None]
    return torch.cat([hats, ramp], dim=-1)


def distance_maps(H, W, theta_y=THETA_Y, theta_v=THETA_V, theta_m=THETA_M):
    """Y, V, M over (reference position, reference position), each N x N."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    p = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)
    d = torch.cdist(p, p)
    phi = bin_weights(d)
    y = phi @ torch.tensor(theta_y, dtype=torch.float32)
    v = phi @ torch.tensor(theta_v, dtype=torch.float32)
    m = torch.sigmoid(phi @ torch.tensor(theta_m, dtype=torch.float32))
    return y, v, m


class GlobalGOCor:
    def __init__(self, C, H, W, num_iter=3, I=16, O=16, seed=0, params=None):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(I, 1, 3, 3, generator=g) * 1e-3
        self.w2 = torch.randn(O, I, 3, 3, generator=g) * 1e-3
        self.target_fg = torch.ones(C)
        self.target_bg = torch.zeros(C)
        self.lam = max(1e-2 ** 2, 1e-5 ** 2)
        self.step = math.exp(0.0)
        self.steplength_reg = 0.0
        thetas = (THETA_Y, THETA_V, THETA_M)
        if params is not None:  # gocor's GlobalParams (--check)
            I, O = params["regInterDim"], params["regOutputDim"]
            self.w1 = torch.tensor(params["regWeight1"]).reshape(I, 1, 3, 3)
            self.w2 = torch.tensor(params["regWeight2"]).reshape(O, I, 3, 3)
            self.target_fg = torch.tensor(params["targetFg"])
            self.target_bg = torch.tensor(params["targetBg"])
            self.lam = max(params["filterReg"] ** 2, 1e-5 ** 2)
            self.step = math.exp(params["logStepLength"])
            self.steplength_reg = params["steplengthReg"]
            thetas = (params["label"], params["weight"], params["maskLogit"])
        self.num_iter = num_iter
        self.H, self.W = H, W
        self.Y, self.V, self.M = distance_maps(H, W, *thetas)

    def reg(self, x):
        """R_theta on N x N scores (r, t): K1 over the query axes, then K2 over the reference axes."""
        H, W = self.H, self.W
        I = self.w1.shape[0]
        z = F.conv2d(x.reshape(H * W, 1, H, W), self.w1, padding=1)  # (r, I, ty, tx)
        z = z.reshape(H, W, I, H * W).permute(3, 2, 0, 1)  # (t, I, ry, rx)
        return F.conv2d(z, self.w2, padding=1)  # (t, O, ry, rx)

    def reg_t(self, q):
        """R_theta^T, the exact adjoint of reg."""
        H, W = self.H, self.W
        I = self.w1.shape[0]
        z = F.conv_transpose2d(q, self.w2, padding=1)  # (t, I, ry, rx)
        z = z.permute(2, 3, 1, 0).reshape(H * W, I, H, W)  # (r, I, ty, tx)
        return F.conv_transpose2d(z, self.w1, padding=1).reshape(H * W, H * W)

    def __call__(self, f, g):
        """f, g (C, H, W) -> volume (H*W query, H, W reference)."""
        C = f.shape[0]
        N = self.H * self.W
        f = f.reshape(C, N).t()  # (N, C), row r = f_r
        g = g.reshape(C, N).t()
        mu = f.mean(dim=0)
        a = (f * f).sum(1, keepdim=True)
        b = (mu * mu).sum()
        c = f @ mu[:, None]
        D = torch.clamp(a * b - c * c, min=1e-6)
        w = ((self.target_fg * b - self.target_bg * c) * f - (self.target_fg * c - self.target_bg * a) * mu) / D
        hm, hp = (1 - self.M) / 2, (1 + self.M) / 2
        for _ in range(self.num_iter):
            S = w @ f.t()
            J = self.V * (hm * torch.sign(S) + hp)
            rho = self.V * (hm * S.abs() + hp * S - self.Y)
            Q = w @ g.t()
            q = self.reg(Q)
            grad = self.lam * w + (J * rho) @ f + self.reg_t(q) @ g
            num = (grad * grad).sum()
            den = ((J * (grad @ f.t())) ** 2).sum() + (self.reg(grad @ g.t()) ** 2).sum() + self.lam * num
            den = torch.clamp(den, min=1e-8) + self.steplength_reg * num
            w = w - self.step * (num / den) * grad
        return (g @ w.t()).reshape(N, self.H, self.W)


def check(path):
    """Runs the module on the inputs and parameters in `path` (JSON: H, W, C, K, params, reference,
    query, volume from gocor's GlobalGOCor) and prints the largest difference from gocor's volume."""
    with open(path) as fh:
        d = json.load(fh)
    H, W, C, K = d["H"], d["W"], d["C"], d["K"]
    module = GlobalGOCor(C, H, W, K, params=d["params"])
    with torch.no_grad():
        vol = module(torch.tensor(d["reference"]).reshape(C, H, W), torch.tensor(d["query"]).reshape(C, H, W))
    ref = torch.tensor(d["volume"]).reshape(vol.shape)
    print(json.dumps({"max_abs_diff": float((vol - ref).abs().max()), "max_abs": float(ref.abs().max())}))


def main():
    if sys.argv[1] == "--check":
        check(sys.argv[2])
        return
    H, W, C, K, reps = (int(x) for x in sys.argv[1:6])
    gen = torch.Generator().manual_seed(1)
    f = torch.rand(C, H, W, generator=gen) * 2 - 1
    g = torch.rand(C, H, W, generator=gen) * 2 - 1
    f = f / torch.sqrt((f * f).sum(0, keepdim=True) + 1e-6)
    g = g / torch.sqrt((g * g).sum(0, keepdim=True) + 1e-6)
    module = GlobalGOCor(C, H, W, K)
    cpu, wall = [], []
    with torch.no_grad():
        for i in range(reps + 2):
            c0, t0 = time.process_time(), time.perf_counter()
            module(f, g)
            if i >= 2:
                cpu.append((time.process_time() - c0) * 1e3)
                wall.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"op": "gocor_global_torch", "H": H, "W": W, "C": C, "K": K, "threads": 1,
                      "ms": round(sorted(cpu)[len(cpu) // 2], 3),
                      "wall_ms": round(sorted(wall)[len(wall) // 2], 3), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
