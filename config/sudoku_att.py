# The paper's Sudoku-Extreme run with the self-attention TRM (74.7% exact, 6.8M parameters).
# Same data and schedule as config/sudoku_mlp.py; only the token mixer changes.
import os  # __file__ is this file's path: sudoku_mlp.py is found from any working directory
exec(open(os.path.join(os.path.dirname(__file__), "sudoku_mlp.py")).read())
out_dir = "out-sudoku-att"
mlp_t = False
pos_encodings = "rope"
num_heads = 8
