<?php
// The Akeneo PIM's legacy Events API sender, as the PIM runs it: Guzzle 7 over libcurl (Debian's
// php-guzzlehttp-guzzle), a Pool with the options of Akeneo's GuzzleWebhookClient
// (src/Akeneo/Connectivity/Connection/back/Infrastructure/Webhook/Client/GuzzleWebhookClient.php):
// concurrency 5, timeout 0.5 s, redirects not followed, the body from json_encode, the signature
// hash_hmac('sha256', "<timestamp>.<body>", secret), headers X-Akeneo-Request-Signature,
// X-Akeneo-Request-Timestamp and User-Agent AkeneoPIM/<version>. Only `verify` differs: the
// test's CA instead of the system store.
//
//   php akeneo_webhook_sender.php URL SECRET CA_FILE LARGE_REQUESTS SMALL_REQUESTS PRODUCT_BYTES
//
// Sends LARGE_REQUESTS requests of 10 products of about PRODUCT_BYTES each (long descriptions in
// several locales) and SMALL_REQUESTS requests of 1 to 3 small products, interleaved, then
// prints a line per request (format at the end): its answer, the Expect header Guzzle added
// (PrepareBodyMiddleware), whether curl's trace shows the server's interim "100 Continue", and
// the event ids it carried.

require_once 'GuzzleHttp/autoload.php';

use GuzzleHttp\Client;
use GuzzleHttp\HandlerStack;
use GuzzleHttp\Middleware;
use GuzzleHttp\Pool;
use GuzzleHttp\Psr7\Request;
use GuzzleHttp\Psr7\Response;
use Psr\Http\Message\RequestInterface;

[$script, $url, $secret, $caFile, $largeRequests, $smallRequests, $productBytes] = $argv;
// The PIM's timeout, 0.5 s; a test run under a sanitizer passes a longer one (see the test).
$timeout = isset($argv[7]) ? (float)$argv[7] : 0.5;

// Without PHP's curl extension Guzzle falls back to PHP's stream wrapper, which never waits for a
// 100 Continue: not the PIM's stack (Akeneo requires ext-curl), so not worth testing against.
if (!function_exists('curl_multi_exec')) {
    fwrite(STDERR, "PHP's curl extension is missing (Debian package php-curl): Guzzle would not use libcurl\n");
    exit(3);
}

function uuid4(): string
{
    $b = random_bytes(16);
    $b[6] = chr((ord($b[6]) & 0x0f) | 0x40);
    $b[8] = chr((ord($b[8]) & 0x3f) | 0x80);
    return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
}

// A product in the REST format the PIM puts in data.resource, with a description of about
// $bytes spread over four locales.
function product(int $bytes): array
{
    $uuid = uuid4();
    $description = [];
    foreach (['en_US', 'fr_FR', 'de_DE', 'it_IT'] as $locale) {
        $text = '';
        while (strlen($text) < $bytes / 4) {
            $text .= "<p>Chaussure de course légère, tige respirante, semelle amortie ($locale).</p>";
        }
        $description[] = ['locale' => $locale, 'scope' => 'ecommerce', 'data' => $text];
    }
    return [
        'uuid' => $uuid,
        'identifier' => 'sku-' . substr($uuid, 0, 8),
        'family' => 'shoes',
        'parent' => null,
        'groups' => [],
        'categories' => ['summer', 'running'],
        'enabled' => true,
        'values' => [
            'description' => $description,
            'name' => [['locale' => null, 'scope' => null, 'data' => 'Runner ' . substr($uuid, 0, 4)]],
        ],
        'created' => '2026-01-02T08:00:00+00:00',
        'updated' => gmdate('Y-m-d\TH:i:sP'),
        'associations' => ['X_SELL' => ['products' => [], 'product_models' => [], 'groups' => []]],
        'quantified_associations' => [],
    ];
}

function event(array $product): array
{
    return [
        'action' => 'product.updated',
        'event_id' => uuid4(),
        'event_datetime' => gmdate(DATE_ATOM),
        'author' => 'julia',
        'author_type' => 'ui',
        'pim_source' => 'https://pim.example.com',
        'data' => ['resource' => $product],
    ];
}

// The batches, large and small interleaved as a busy PIM would send them.
$batches = [];
for ($i = 0; $i < max((int)$largeRequests, (int)$smallRequests); $i++) {
    if ($i < (int)$largeRequests) {
        $events = [];
        for ($p = 0; $p < 10; $p++) {
            $events[] = event(product((int)$productBytes));
        }
        $batches[] = $events;
    }
    if ($i < (int)$smallRequests) {
        $events = [];
        for ($p = 0; $p <= $i % 3; $p++) {
            $events[] = event(product(400));
        }
        $batches[] = $events;
    }
}

$results = [];
$traces = [];
$stack = HandlerStack::create();
// Innermost middleware (the stack runs first-pushed outermost): sees the request after
// PrepareBodyMiddleware added Expect, records it, and hands curl a per-request trace stream.
$stack->push(function (callable $handler) use (&$results, &$traces) {
    return function (RequestInterface $request, array $options) use ($handler, &$results, &$traces) {
        $index = (int)$request->getHeaderLine('X-Test-Index');
        $results[$index]['expect'] = $request->getHeaderLine('Expect');
        // curl writes its trace to a file descriptor (CURLOPT_STDERR): a real file, not php://temp.
        $traces[$index] = tmpfile();
        $options['debug'] = $traces[$index];
        return $handler($request->withoutHeader('X-Test-Index'), $options);
    };
});
$client = new Client(['handler' => $stack, 'verify' => $caFile]);

$requests = function () use ($batches, $url, $secret, &$results) {
    foreach ($batches as $index => $events) {
        $body = json_encode(['events' => $events]);
        $timestamp = time();
        $signature = hash_hmac('sha256', $timestamp . '.' . $body, $secret);
        $results[$index] = [
            'index' => $index,
            'status' => 0,
            'error' => null,
            'bytes' => strlen($body),
            'expect' => '',
            'continue' => false,
            'event_ids' => array_map(fn ($e) => $e['event_id'], $events),
        ];
        yield $index => new Request('POST', $url, [
            'Content-Type' => 'application/json',
            'X-Akeneo-Request-Signature' => $signature,
            'X-Akeneo-Request-Timestamp' => $timestamp,
            'User-Agent' => 'AkeneoPIM/v20261120',
            'X-Test-Index' => (string)$index,
        ], $body);
    }
};

$pool = new Pool($client, $requests(), [
    'concurrency' => 5,
    'options' => [
        'timeout' => $timeout,
        'allow_redirects' => false,
    ],
    'fulfilled' => function (Response $response, $index) use (&$results) {
        $results[$index]['status'] = $response->getStatusCode();
    },
    'rejected' => function ($reason, $index) use (&$results) {
        $results[$index]['error'] = $reason->getMessage();
        if (method_exists($reason, 'getResponse') && $reason->getResponse() !== null) {
            $results[$index]['status'] = $reason->getResponse()->getStatusCode();
        }
    },
]);
$pool->promise()->wait();

foreach ($traces as $index => $trace) {
    rewind($trace);
    $results[$index]['continue'] = str_contains(stream_get_contents($trace), '< HTTP/1.1 100 Continue');
}
ksort($results);
// One line per request, easy to read from C++:
//   <index> <status> <expect header or -> <1 if 100 Continue seen, else 0> <bytes> <ids,...> <error>
printf("guzzle %s\n", Client::MAJOR_VERSION);
foreach ($results as $r) {
    printf("%d %d %s %d %d %s %s\n", $r['index'], $r['status'], $r['expect'] === '' ? '-' : $r['expect'],
        $r['continue'] ? 1 : 0, $r['bytes'], implode(',', $r['event_ids']),
        $r['error'] === null ? '' : str_replace("\n", ' ', $r['error']));
}
