# The paper's Maze-Hard run (85.3% exact, 6.8M parameters): attention with RoPE, T=3, n=4.
# Needs 4 L40S for about 24 hours in the paper (bf16 + compile). Data, 1000 train and 1000 test mazes:
#   python prepare_maze.py --download        # sapientinc/maze-30x30-hard-1k -> data/maze-30x30-hard-1k
# train.py's defaults are the paper's (hidden 512, N_sup=16, batch 768, 2000 warm-up steps, EMA 0.999,
# stable-max); the settings of the official Maze-Hard command are all stated here.
data_dir = "data/maze-30x30-hard-1k"
out_dir = "out-maze"
mlp_t = False
pos_encodings = "rope"
hidden_size = 512
num_heads = 8
L_layers = 2
H_cycles = 3              # T
L_cycles = 4              # n
halt_max_steps = 16
puzzle_emb_ndim = 512     # one identifier for all mazes: a single learned 16-position prefix
puzzle_emb_len = 16
global_batch_size = 768
epochs = 50000            # 1000 groups / 768 per batch: one step per epoch, 65104 steps in all
eval_interval = 5000
ckpt_interval = 5000
lr = 1e-4
weight_decay = 1.0
puzzle_emb_lr = 1e-4
puzzle_emb_weight_decay = 1.0
ema = True
