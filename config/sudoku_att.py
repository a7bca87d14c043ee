# The paper's Sudoku-Extreme run with the self-attention TRM (74.7% exact, 6.8M parameters).
# Same data and schedule as config/sudoku_mlp.py; only the token mixer changes.
exec(open("config/sudoku_mlp.py").read())
out_dir = "out-sudoku-att"
mlp_t = False
pos_encodings = "rope"
num_heads = 8
