# The paper's ARC-AGI-2 run (7.8% pass@2 reported): the same model and schedule as
# config/arc1.py on ARC-AGI-2's training and evaluation tasks plus ConceptARC, scored on evaluation2:
#   python prepare_arc.py --source <directory holding the arc-agi_*_challenges.json files> --version 2
# Never score ARC-AGI-1's evaluation set with this model: ARC-AGI-2's training set contains it.
import os  # __file__ is this file's path: arc1.py is found from any working directory
exec(open(os.path.join(os.path.dirname(__file__), "arc1.py")).read())
data_dir = "data/arc2concept-aug-1000"
out_dir = "out-arc2"
