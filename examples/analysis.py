"""A small analysis, run through sqenv's launcher: `python examples/analysis.py`."""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import linalg

rng = np.random.default_rng(0)
a = rng.standard_normal((200, 200))
frame = pd.DataFrame({"eigenvalue": np.sort(np.abs(linalg.eigvals(a)))})
print(f"python      {sys.executable}")
print(f"prefix      {sys.prefix}")
print(f"numpy       {np.__version__} from {np.__file__}")
print(f"largest |eigenvalue| of a 200x200 normal matrix: {frame.eigenvalue.max():.3f}")
frame.plot(y="eigenvalue").get_figure().savefig("eigenvalues.png")
plt.close("all")
print("wrote eigenvalues.png")
