# HRM (Wang et al. 2025, arXiv 2506.21734) on Sudoku-Extreme, as a TRM config: 27,275,266 trainable
# parameters, the official HRM's count (55.0% exact in the paper). Data as config/sudoku_mlp.py:
#   python prepare_sudoku.py --download --subsample 1000 --num_aug 1000
# Model: sapientinc/HRM config/arch/hrm_v1.yaml; schedule: its README's Sudoku-Extreme-1k command
# (8 GPUs, global batch 768). What HRM does that these switches do not: README "HRM as a config".
data_dir = "data/sudoku-extreme-1k-aug-1000"
out_dir = "out-hrm-sudoku"
# model
two_networks = True       # f_L (official L_level) updates z, f_H (H_level) updates y
L_layers = 4              # each network: 4 attention blocks (HRM's H_layers = L_layers = 4)
hidden_size = 512
num_heads = 8
mlp_t = False             # self-attention with RoPE
pos_encodings = "rope"
H_cycles = 2              # HRM's N high-level cycles ...
L_cycles = 2              # ... of T low-level steps each
grad_mode = "one_step"    # gradient through the last f_L and the last f_H application only
no_ACT_continue = False   # Q-learning halting: halt when q_halt > q_continue, continue target from a 2nd pass
halt_max_steps = 16
puzzle_emb_ndim = 512
puzzle_emb_len = 1        # HRM: ceil(puzzle_emb_ndim / hidden_size) = 1 prefix position (TRM uses 16)
# schedule (HRM README: epochs=20000 eval_interval=2000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0
# puzzle_emb_weight_decay=1.0; on one GPU it suggests global_batch_size=384 with lr=puzzle_emb_lr=7e-5)
epochs = 20000
eval_interval = 2000
ckpt_interval = 5000
lr = 1e-4
puzzle_emb_lr = 1e-4
weight_decay = 1.0
puzzle_emb_weight_decay = 1.0
ema = False               # EMA is TRM's addition; HRM evaluates the raw weights
