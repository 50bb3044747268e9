package dev.shardwise.cli;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.infer.moefy.Moefier;
import dev.shardwise.infer.moefy.MoefiedModel;
import dev.shardwise.infer.moefy.MoefyEvaluation;
import dev.shardwise.train.Checkpoint;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code shardwise moefy}: MoEfication (Zhang et al. 2022) of a trained dense run, and its loss against FFN compute. */
@Command(name = "moefy", mixinStandardHelpOptions = true,
        description = {"MoEfication (Zhang et al. 2022): split each block's FFN of a trained dense run into E experts by balanced "
                + "k-means on the neurons' input weights, permute the neurons into expert order (the dense function is "
                + "unchanged), train a router per block on hidden states from the run's training tokens, and write it all as "
                + "one checkpoint (default RUN/moefied). With --eval (or given a MoEfied checkpoint), print the validation loss "
                + "with K of E experts per token against the fraction of FFN compute K/E, and write moefy.png, moefy.tsv and "
                + "moefy.json beside it. generate --checkpoint OUT --active K samples with K experts."},
        footer = {"", "Examples:", "  shardwise moefy --checkpoint runs/dense --experts 8 --eval",
                "  shardwise moefy --checkpoint runs/dense/moefied --active 2,4,8", ""})
public final class MoefyCommand implements Callable<Integer> {
    @Option(names = "--checkpoint", paramLabel = "RUN", required = true,
            description = "A dense run directory (train --run-dir) to MoEfy, or a MoEfied checkpoint to evaluate.")
    Path checkpoint;

    @Option(names = "--experts", paramLabel = "E", description = "Experts per block; must divide the FFN width (model.ffnHidden).")
    Integer experts;

    @Option(names = {"-o", "--output"}, paramLabel = "OUT", description = "Where to write the MoEfied checkpoint (default: RUN/moefied).")
    Path output;

    @Option(names = "--split", paramLabel = "HOW", defaultValue = "kmeans",
            description = "How neurons form experts: kmeans (MoEfication's parameter clustering) or random (its baseline) "
                    + "(default: ${DEFAULT-VALUE}).")
    String split;

    @Option(names = "--router-steps", paramLabel = "N", defaultValue = "1000", description = "Adam steps per router (default: ${DEFAULT-VALUE}).")
    int routerSteps;

    @Option(names = "--router-hidden", paramLabel = "R", defaultValue = "0", description = "Router hidden width; 0 is C/4 (default: ${DEFAULT-VALUE}).")
    int routerHidden;

    @Option(names = "--router-tokens", paramLabel = "N", defaultValue = "32768",
            description = "FFN inputs recorded per block to train the routers, 10%% held out for their recall (default: ${DEFAULT-VALUE}).")
    int routerTokens;

    @Option(names = "--router-batch", paramLabel = "N", defaultValue = "512", description = "Rows per router step (default: ${DEFAULT-VALUE}).")
    int routerBatch;

    @Option(names = "--router-lr", paramLabel = "LR", defaultValue = "1e-3", description = "Router learning rate (default: ${DEFAULT-VALUE}).")
    double routerLr;

    @Option(names = "--seed", paramLabel = "S", defaultValue = "1", description = "k-means, router and sampling seed (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--eval", description = "After MoEfying, evaluate it (implied when --checkpoint is already MoEfied).")
    boolean eval;

    @Option(names = "--active", paramLabel = "K", split = ",", description = "Experts per token to evaluate, e.g. 1,2,4,8 (default: 1..E).")
    List<Integer> active;

    @Option(names = "--eval-batches", paramLabel = "N", defaultValue = "0",
            description = "Validation batches per evaluation; 0 is the run's evalBatches (default: ${DEFAULT-VALUE}).")
    int evalBatches;

    @Option(names = "--oracle", description = "Also evaluate ground-truth expert selection (the K experts of largest actual "
            + "activation, found by computing the whole FFN): the bound the routers aim at.")
    boolean oracle;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        PrintStream log = System.out;
        Path target;
        if (MoefiedModel.isMoefied(Checkpoint.resolve(checkpoint))) {
            if (experts != null) {
                throw new IllegalArgumentException(checkpoint + " is already MoEfied; drop --experts to evaluate it, or pass "
                        + "the dense run directory to MoEfy it again");
            }
            target = Checkpoint.resolve(checkpoint);
            eval = true;
        } else {
            if (experts == null) {
                throw new IllegalArgumentException("--experts E is required to MoEfy " + checkpoint + " (e.g. --experts 8); "
                        + "to evaluate, pass a MoEfied checkpoint (moefy's output)");
            }
            Path out = output != null ? output : checkpoint.resolve("moefied");
            Moefier.Split how = switch (split) {
                case "kmeans" -> Moefier.Split.KMEANS;
                case "random" -> Moefier.Split.RANDOM;
                default -> throw new IllegalArgumentException("--split " + split + " is not known; use kmeans or random");
            };
            target = Moefier.run(checkpoint, out, new Moefier.Settings(experts, how, routerHidden, routerSteps, routerBatch,
                    routerTokens, routerLr, seed), log);
        }
        if (!eval) return 0;
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (MoefiedModel moefied = MoefiedModel.load(target, pool)) {
            log.printf("validation loss of %s with K of %d experts per token:%n", target, moefied.experts());
            int[] ks = active == null ? null : active.stream().mapToInt(Integer::intValue).toArray();
            MoefyEvaluation.run(moefied, ks, evalBatches, oracle, target, pool, log);
        }
        return 0;
    }
}
