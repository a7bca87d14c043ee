# The paper's Sudoku-Extreme run with the MLP-t TRM (87.4% exact, 5.0M parameters; spec section 7).
# Needs one L40S / H100 for about 36 hours (bf16 + compile). Data:
#   python prepare_sudoku.py --download --subsample 1000 --num_aug 1000
data_dir = "data/sudoku-extreme-1k-aug-1000"
out_dir = "out-sudoku-mlp"
mlp_t = True
pos_encodings = "none"
hidden_size = 512
L_layers = 2
H_cycles = 3              # T
L_cycles = 6              # n
halt_max_steps = 16
halt_exploration_prob = 0.1
puzzle_emb_ndim = 512
puzzle_emb_len = 16
loss_type = "stablemax"
global_batch_size = 768
epochs = 50000
eval_interval = 5000      # 1000 groups / 768 = one step per epoch, so steps = epochs here
ckpt_interval = 5000
lr = 1e-4
lr_min_ratio = 1.0
lr_warmup_steps = 2000
weight_decay = 1.0
beta1 = 0.9
beta2 = 0.95
puzzle_emb_lr = 1e-4
puzzle_emb_weight_decay = 1.0
ema = True
ema_rate = 0.999
