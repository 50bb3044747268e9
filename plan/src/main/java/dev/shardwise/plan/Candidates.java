package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;

import java.util.LinkedHashMap;
import java.util.Map;

/** Layouts as text: {@code tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0[,ep=4][,schedule=1f1b]}. */
public final class Candidates {
    private Candidates() { }

    /** The layout {@code text} spells, with dp inferred from the devices when it is left out (1 if devices is 0). */
    public static Choice parse(String text, int devices) {
        Map<String, String> kv = new LinkedHashMap<>();
        for (String part : text.split(",")) {
            if (part.isBlank()) continue;
            String[] pair = part.split("=", 2);
            if (pair.length != 2) {
                throw new IllegalArgumentException("--explain: '" + part.strip() + "' is not key=value; write e.g. "
                        + "\"tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0\"");
            }
            String key = pair[0].strip().toLowerCase();
            if (!java.util.List.of("tp", "pp", "dp", "vpp", "mb", "recompute", "sp", "zero", "ep", "schedule").contains(key)) {
                throw new IllegalArgumentException("--explain: unknown key '" + key + "'; valid keys are tp, pp, dp, vpp, mb, recompute, sp, zero, ep, schedule");
            }
            kv.put(key, pair[1].strip());
        }
        int tp = integer(kv, "tp", 1), pp = integer(kv, "pp", 1), vpp = integer(kv, "vpp", 1), mb = integer(kv, "mb", 1);
        int dp = kv.containsKey("dp") ? integer(kv, "dp", 1) : devices > 0 ? devices / Math.max(1, tp * pp) : 1;
        Recompute recompute = kv.containsKey("recompute") ? Recompute.parse(kv.get("recompute")) : Recompute.NONE;
        boolean sp = kv.containsKey("sp") && bool(kv.get("sp"));
        int zero = integer(kv, "zero", 0), ep = integer(kv, "ep", 1);
        ScheduleKind schedule = kv.containsKey("schedule") ? ScheduleKind.parse(kv.get("schedule")) : ScheduleKind.defaultFor(vpp);
        return new Choice(new ParallelLayout(dp, tp, pp, vpp, ep, sp, zero, recompute, mb), schedule);
    }

    /** The text {@link #parse} reads back. */
    public static String format(ParallelLayout l, ScheduleKind schedule) {
        return "tp=" + l.tp() + ",pp=" + l.pp() + ",dp=" + l.dp() + ",vpp=" + l.vpp() + ",mb=" + l.microBatch()
                + ",recompute=" + l.recompute() + ",sp=" + l.sequenceParallel() + ",zero=" + l.zeroStage()
                + (l.ep() == 1 ? "" : ",ep=" + l.ep())
                + (schedule == ScheduleKind.defaultFor(l.vpp()) ? "" : ",schedule=" + schedule);
    }

    /** A layout and the schedule it runs. */
    public record Choice(ParallelLayout layout, ScheduleKind schedule) { }

    private static int integer(Map<String, String> kv, String key, int otherwise) {
        if (!kv.containsKey(key)) return otherwise;
        try {
            return Integer.parseInt(kv.get(key));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--explain: " + key + "=" + kv.get(key) + " must be a whole number");
        }
    }

    private static boolean bool(String s) {
        return switch (s.toLowerCase()) {
            case "true", "y", "yes", "1" -> true;
            case "false", "n", "no", "0" -> false;
            default -> throw new IllegalArgumentException("--explain: sp=" + s + " must be true or false");
        };
    }
}
