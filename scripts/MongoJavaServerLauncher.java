// Tiny launcher for de.bwaldvogel:mongo-java-server (in-memory backend) used by
// scripts/stack.sh when MONGO_IMPL=mongo-java-server.
//
// Usage: java -cp '<cache>/mongo-java-server-<ver>/libs/*:<cache>/mongo-java-server-<ver>/classes' \
//             MongoJavaServerLauncher [host] [port]
// Defaults: 127.0.0.1 27017. Runs until SIGTERM/SIGINT. Data lives in memory only and is
// lost when the process stops.
//
// Compiled by scripts/bootstrap.sh into the cache; not part of the C build.

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

import java.util.concurrent.CountDownLatch;

public final class MongoJavaServerLauncher {
    private MongoJavaServerLauncher() {
    }

    public static void main(String[] args) throws Exception {
        String host = args.length > 0 ? args[0] : "127.0.0.1";
        int port = args.length > 1 ? Integer.parseInt(args[1]) : 27017;

        MongoServer server = new MongoServer(new MemoryBackend());
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("mongo-java-server: shutting down");
            server.shutdownNow();
            stopped.countDown();
        }, "shutdown"));

        server.bind(host, port);
        System.out.println("mongo-java-server: listening on " + host + ":" + port);
        System.out.flush();
        stopped.await();
    }
}
