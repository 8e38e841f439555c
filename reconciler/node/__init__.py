"""The node agent (`circle node run`): it follows the Human Chain, registers its inventory in
the state store under a lease signed by its node key, campaigns for leadership, plans when it
leads, and accepts (later runs) only the assignments the rules of `reconciler.plan.admission`
let through.
"""
