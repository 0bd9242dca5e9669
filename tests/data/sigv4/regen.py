#!/usr/bin/python3
"""Regenerate the SigV4 test vectors in this directory with botocore.

Run with Debian's interpreter, which has python3-botocore:

    /usr/bin/python3 tests/data/sigv4/regen.py [--suite DIR]

Every sub-directory holds one case: request.txt and context.json are the
input; canonical-request.txt, string-to-sign.txt, signature.txt and
authorization.txt are written here from botocore's SigV4Auth (S3SigV4Auth
for the cases whose context says "s3_style": true).

--suite DIR first copies request.txt and context.json of every case of the
aws-c-auth suite (tests/aws-signing-test-suite/v4) except the ones in
SKIPPED, and afterwards reports where botocore's answer differs from the
suite's own header-* files. The Lambda and S3 cases of our own (OWN_CASES)
are written from the definitions below on every run.

The request.txt reader here and the one in tests/unit/test_sigv4.c follow the
same rules; change them together:
  * the first line is "METHOD SP target SP version"; the target may hold
    spaces (get-space-*), so the method ends at the first space and the
    version starts after the last one; the query follows the first '?';
  * "Name:value" lines follow; the value is everything after the first ':'
    (untrimmed: the signer trims); a line starting with a space or tab
    continues the previous value and is appended after one space (RFC 9112
    obs-fold); repeated names are kept, in order;
  * the first empty line ends the headers; every byte after it is the body.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import sys
import urllib.parse

import botocore
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))

# Suite cases left out, with the reason (also in README.md).
_UNNORMALIZED = (
    'normalize=false: the path is to be signed without removing dot '
    'segments but still URI-encoded. botocore has no such mode: SigV4Auth '
    'always removes dot segments and empty segments, S3SigV4Auth neither '
    'normalizes nor encodes (and adds X-Amz-Content-SHA256). lg_sigv4 has the '
    'same two modes (s3_style false/true), so neither side can express it.'
)
SKIPPED = {
    'get-relative-relative-unnormalized': _UNNORMALIZED,
    'get-relative-unnormalized': _UNNORMALIZED,
    'get-slash-dot-slash-unnormalized': _UNNORMALIZED,
    'get-slash-pointless-dot-unnormalized': _UNNORMALIZED,
    'get-slash-unnormalized': _UNNORMALIZED,
    'get-slashes-unnormalized': _UNNORMALIZED,
    'get-space-unnormalized': _UNNORMALIZED,
}

ACCESS_KEY = 'AKIDEXAMPLE'
SECRET_KEY = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY'
LAMBDA_TOKEN = (
    'IQoJb3JpZ2luX2VjEXAMPLEtokenFQoGZXIvYXdzEBYaDEXAMPLE/tokenZEXAMPLE+'
    'a1b2c3d4e5f6g7h8i9j0EXAMPLEsessiontoken=='
)
LAMBDA_HOST = 'lambda.us-west-2.amazonaws.com'
LAMBDA_TIME = '2024-03-05T08:09:10Z'
INVOKE = '/2015-03-31/functions/%s/invocations'
ARN_ALIAS = 'arn:aws:lambda:us-west-2:123456789012:function:my-fn:prod'
EVENT_BODY = b'{"version":"2.0","rawPath":"/hello","body":"hi there","isBase64Encoded":false}'


def _lambda_case(target, body=EVENT_BODY, extra_headers=(), token=None):
    head = ['POST %s HTTP/1.1' % target, 'Host:%s' % LAMBDA_HOST]
    if body:
        head.append('Content-Type:application/json')
    head.extend(extra_headers)
    request = ('\n'.join(head) + '\n\n').encode() + body
    creds = {'access_key_id': ACCESS_KEY, 'secret_access_key': SECRET_KEY}
    if token:
        creds['token'] = token
    context = {
        'credentials': creds,
        'normalize': True,
        'region': 'us-west-2',
        'service': 'lambda',
        'sign_body': False,
        'timestamp': LAMBDA_TIME,
    }
    return request, context


def _s3_case():
    body = b'hello, world\n'
    digest = hashlib.sha256(body).hexdigest()
    request = (
        'PUT /my-bucket/photos/2024/../cat%20pic.jpg?x-id=PutObject HTTP/1.1\n'
        'Host:s3.eu-west-1.amazonaws.com\n'
        'Content-Type:image/jpeg\n'
        'X-Amz-Content-SHA256:' + digest + '\n'
        '\n'
    ).encode() + body
    context = {
        'credentials': {'access_key_id': ACCESS_KEY, 'secret_access_key': SECRET_KEY},
        'normalize': False,
        's3_style': True,
        'region': 'eu-west-1',
        'service': 's3',
        'sign_body': False,
        'timestamp': '2024-03-05T23:59:59Z',
    }
    return request, context


# Our own cases: name -> (request.txt bytes, context dict).
OWN_CASES = {
    'lambda-invoke-name': _lambda_case(INVOKE % 'my-function'),
    'lambda-invoke-arn-alias': _lambda_case(INVOKE % urllib.parse.quote(ARN_ALIAS, safe='')),
    'lambda-invoke-qualifier-latest': _lambda_case(INVOKE % 'my-function' + '?Qualifier=%24LATEST'),
    'lambda-invoke-qualifier-prod': _lambda_case(INVOKE % 'my-function' + '?Qualifier=prod'),
    'lambda-invoke-session-token': _lambda_case(INVOKE % 'my-function', token=LAMBDA_TOKEN),
    'lambda-invoke-empty-body': _lambda_case(INVOKE % 'my-function', body=b''),
    'lambda-invoke-event': _lambda_case(
        INVOKE % 'my-function', extra_headers=['X-Amz-Invocation-Type: Event']
    ),
    'lambda-invoke-arn-qualifier-token-event': _lambda_case(
        INVOKE % urllib.parse.quote('arn:aws:lambda:us-west-2:123456789012:function:my-fn', safe='')
        + '?Qualifier=%24LATEST',
        extra_headers=['x-amz-invocation-type:Event', 'X-Amz-Log-Type:  None  '],
        token=LAMBDA_TOKEN,
    ),
    's3-put-object-unnormalized': _s3_case(),
}

OUTPUTS = ('canonical-request.txt', 'string-to-sign.txt', 'signature.txt', 'authorization.txt')


def parse_request(data):
    """Split request.txt into (method, path, query or None, [(name, value)], body)."""
    lines = []
    pos = 0
    body = b''
    while pos < len(data):
        nl = data.find(b'\n', pos)
        line = data[pos:] if nl < 0 else data[pos:nl]
        pos = len(data) if nl < 0 else nl + 1
        if line.endswith(b'\r'):
            line = line[:-1]
        if line == b'' and lines:
            body = data[pos:]
            break
        lines.append(line.decode('utf-8'))
    request_line = lines[0]
    first, last = request_line.index(' '), request_line.rindex(' ')
    if first == last:
        raise ValueError('bad request line: %r' % request_line)
    method, target = request_line[:first], request_line[first + 1:last]
    path, sep, query = target.partition('?')
    headers = []
    for line in lines[1:]:
        if line[:1] in (' ', '\t'):
            name, value = headers[-1]
            headers[-1] = (name, value + ' ' + line)
            continue
        name, sep2, value = line.partition(':')
        if not sep2:
            raise ValueError('bad header line: %r' % line)
        headers.append((name, value))
    return method, path, (query if sep else None), headers, body


def query_params(query):
    """The query as decoded (name, value) pairs, the form botocore's clients
    sign it in (request.params, encoded by botocore itself)."""
    params = []
    for pair in query.split('&'):
        name, _, value = pair.partition('=')
        params.append((
            urllib.parse.unquote(name, errors='strict'),
            urllib.parse.unquote(value, errors='strict'),
        ))
    return params


def is_canonically_encoded(query):
    return re.fullmatch(r'([A-Za-z0-9\-_.~=&]|%[0-9A-F]{2})*', query) is not None


def botocore_sign(request_bytes, context, query_as_params=True):
    method, path, query, headers, body = parse_request(request_bytes)
    host = next(v for n, v in headers if n.lower() == 'host').strip()
    url = 'https://%s%s' % (host, path)
    if query is not None and not query_as_params:
        url += '?' + query
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders appends: duplicates kept
    if query and query_as_params:
        request.params = query_params(query)

    c = context['credentials']
    # aws-c-auth's omit_session_token signs as if there were no token and adds
    # X-Amz-Security-Token afterwards, unsigned: that is signing without one.
    token = None if context.get('omit_session_token') else c.get('token')
    creds = Credentials(c['access_key_id'], c['secret_access_key'], token)
    signer_class = S3SigV4Auth if context.get('s3_style') else SigV4Auth
    signer = signer_class(creds, context['service'], context['region'])
    when = datetime.datetime.strptime(context['timestamp'], '%Y-%m-%dT%H:%M:%SZ')
    request.context['timestamp'] = when.strftime('%Y%m%dT%H%M%SZ')
    # What add_auth does before signing: drop Authorization, set X-Amz-Date
    # and X-Amz-Security-Token (and for S3, X-Amz-Content-SHA256).
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    signature = signer.signature(string_to_sign, request)
    signer._inject_signature_to_request(request, signature)
    if context.get('s3_style'):
        sent = [v for n, v in headers if n.lower() == 'x-amz-content-sha256']
        if sent != [request.headers['X-Amz-Content-SHA256']]:
            raise ValueError('request.txt must carry X-Amz-Content-SHA256 as botocore sets it')
    return {
        'canonical-request.txt': canonical,
        'string-to-sign.txt': string_to_sign,
        'signature.txt': signature,
        'authorization.txt': request.headers['Authorization'],
    }


def import_suite(suite):
    names = sorted(d for d in os.listdir(suite) if os.path.isdir(os.path.join(suite, d)))
    for name in names:
        with open(os.path.join(suite, name, 'context.json')) as f:
            normalize = json.load(f).get('normalize', True)
        if (name in SKIPPED) != (not normalize):
            raise SystemExit('%s: SKIPPED does not match its context.json' % name)
        if name in SKIPPED:
            continue
        os.makedirs(os.path.join(HERE, name), exist_ok=True)
        for f in ('request.txt', 'context.json'):
            shutil.copyfile(os.path.join(suite, name, f), os.path.join(HERE, name, f))
    return names


def write_own_cases():
    for name, (request, context) in OWN_CASES.items():
        os.makedirs(os.path.join(HERE, name), exist_ok=True)
        with open(os.path.join(HERE, name, 'request.txt'), 'wb') as f:
            f.write(request)
        with open(os.path.join(HERE, name, 'context.json'), 'w') as f:
            json.dump(context, f, indent=4, sort_keys=True)
            f.write('\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--suite', help='aws-c-auth tests/aws-signing-test-suite/v4 to import and compare')
    args = ap.parse_args()
    print('botocore', botocore.__version__, file=sys.stderr)
    suite_names = import_suite(args.suite) if args.suite else []
    write_own_cases()

    cases = sorted(d for d in os.listdir(HERE) if os.path.isfile(os.path.join(HERE, d, 'request.txt')))
    for name in cases:
        with open(os.path.join(HERE, name, 'request.txt'), 'rb') as f:
            request = f.read()
        with open(os.path.join(HERE, name, 'context.json')) as f:
            context = json.load(f)
        out = botocore_sign(request, context)
        for fname in OUTPUTS:
            with open(os.path.join(HERE, name, fname), 'w', encoding='utf-8') as f:
                f.write(out[fname])

        # The query given to botocore as the URL (how a verifier that sees
        # the request line signs it) must agree whenever the query is sent
        # canonically encoded; say so where it does not.
        query = parse_request(request)[2]
        verbatim = botocore_sign(request, context, query_as_params=False)
        if verbatim['canonical-request.txt'] != out['canonical-request.txt']:
            if query is not None and is_canonically_encoded(query):
                raise SystemExit('%s: URL and params forms differ for a canonical query' % name)
            print('note: %s: botocore signs the raw query %r verbatim when given it in the URL'
                  % (name, query), file=sys.stderr)

        if name in suite_names:
            for ours, theirs in (('canonical-request.txt', 'header-canonical-request.txt'),
                                 ('string-to-sign.txt', 'header-string-to-sign.txt'),
                                 ('signature.txt', 'header-signature.txt')):
                with open(os.path.join(args.suite, name, theirs), encoding='utf-8') as f:
                    if f.read().strip() != out[ours]:
                        print('differs from aws-c-auth: %s %s' % (name, ours), file=sys.stderr)
    print('%d cases written, %d suite cases skipped' % (len(cases), len(SKIPPED)), file=sys.stderr)


if __name__ == '__main__':
    main()
