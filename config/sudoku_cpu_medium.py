# The quick start's stretch: medium 9x9 Sudoku (26-30 givens, 29% need a guess) in 10 minutes.
#   python prepare_sudoku.py --difficulty medium && python train.py config/sudoku_cpu_medium.py
exec(open("config/sudoku_cpu.py").read())
data_dir = "data/sudoku-medium"
out_dir = "out-sudoku-cpu-medium"
